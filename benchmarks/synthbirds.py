"""Benchmark on synthbirds test images, where every image's true attributes are known.

Measures, in one run on the same images:
- the demo CNN's test accuracy;
- precision of the top-5 explained attributes against each image's true attributes, for
  every normalization (sigma) choice, beside two baselines: the predicted class's most
  frequent training-caption attributes, and a constant filter-attribute p.d.f.;
- for confusable pairs, the share of test images whose contrastive explanation (why its
  class and not the twin) names one of the pair's true differing attributes.

Writes benchmarks/results/synthbirds.json and the table between the markers in
BENCHMARKS.md. Run:  .venv/bin/python benchmarks/synthbirds.py
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from saywhy.demo import ensure_demo
from saywhy.explain.explainer import Explainer, ExplainerConfig
from saywhy.pipeline import ExplainerSession, fit_explainer
from saywhy.text.phrases import PhraseExtractor
from saywhy.workspace import Workspace

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "synthbirds.json"
MARKDOWN = HERE.parent / "BENCHMARKS.md"
BEGIN, END = "<!-- synthbirds:begin -->", "<!-- synthbirds:end -->"

VARIANTS = {
    "saywhy default (evidence model, margin contrast)": ExplainerConfig(),
    "saywhy, evidence model, difference contrast": ExplainerConfig(contrast="difference"),
    "saywhy, p(t|f) top 10% / l1, margin contrast": ExplainerConfig(attribute_model="cooccurrence"),
    "saywhy, p(t|f) top 5%": ExplainerConfig(attribute_model="cooccurrence", top_fraction=0.05),
    "saywhy, p(t|f) top 20%": ExplainerConfig(attribute_model="cooccurrence", top_fraction=0.2),
    "saywhy, p(t|f), difference contrast": ExplainerConfig(attribute_model="cooccurrence", contrast="difference"),
    "paper (l1 / l1, tfidf prior, sum, difference contrast)": ExplainerConfig.paper(),
    "paper, sigma softmax / l1": ExplainerConfig.paper(sigma_activation="softmax"),
    "paper, sigma minmax / l1": ExplainerConfig.paper(sigma_activation="minmax"),
    "paper, sigma identity / l1": ExplainerConfig.paper(sigma_activation="identity"),
    "paper, sigma l1 / softmax": ExplainerConfig.paper(sigma_decision="softmax"),
    "paper, sigma l1 / minmax": ExplainerConfig.paper(sigma_decision="minmax"),
    "paper, filter scale max": ExplainerConfig.paper(filter_scale="max"),
    "paper, likelihood mean": ExplainerConfig.paper(likelihood="mean"),
    "paper, prior tfidf_sum": ExplainerConfig.paper(prior="tfidf_sum"),
    "paper, prior uniform": ExplainerConfig.paper(prior="uniform"),
}


def canonical(phrase: str, synonyms: dict[str, str]) -> str:
    """Map a caption phrase onto the generator's canonical words ("gray bill" -> "grey beak")."""
    return " ".join(synonyms.get(word, word) for word in phrase.split())


def precision(lists: list[list[str]], truths: list[set[str]], synonyms: dict[str, str]) -> float:
    """Mean over images of (explained attributes that are true) / (attributes explained)."""
    scores = [np.mean([canonical(t, synonyms) in truth for t in top]) if top else 0.0 for top, truth in zip(lists, truths)]
    return float(np.mean(scores))


def class_frequency_baseline(explainer: Explainer, train_documents, train_classes, predicted, k):
    """Top-k most frequent caption attributes of the predicted class (a text-only baseline)."""
    per_class: dict[int, Counter] = {}
    for doc, c in zip(train_documents, train_classes):
        per_class.setdefault(c, Counter()).update(t for t in doc if t in set(explainer.vocabulary_))
    return [[t for t, _ in per_class.get(int(c), Counter()).most_common(k)] for c in predicted]


def constant_pdf_baseline(explainer: Explainer, n_images: int, k: int) -> list[list[str]]:
    """p(t|f) the same for every filter (its average), so eq. 5 gives one ranking for all images."""
    constant = explainer.filter_attribute_pdf_.mean(axis=0)
    top = [explainer.vocabulary_[j] for j in np.argsort(-constant, kind="stable")[:k]]
    return [top] * n_images


def contrast_hits(explainer: Explainer, pooled, test_records, class_index, pairs, synonyms) -> dict:
    hits, total = 0, 0
    for pair in pairs:
        differing = {canonical(t, synonyms) for t in pair["a_only"] + pair["b_only"]}
        for mine, other in ((pair["a"], pair["b"]), (pair["b"], pair["a"])):
            for row, record in enumerate(test_records):
                if record.class_id != mine:
                    continue
                c = explainer.contrast(pooled[row], class_index(mine), class_index(other))
                named = {canonical(t, synonyms) for t, _ in c.favour + c.against}
                hits += bool(named & differing)
                total += 1
    return {"share": hits / max(1, total), "images": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="workspace (default $SAYWHY_HOME or ./.saywhy)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    workspace = Workspace(args.home) if args.home else Workspace.default()
    art = ensure_demo(workspace, progress=False)
    dataset, truth = art.dataset, art.truth
    synonyms = truth["synonyms"]
    session = ExplainerSession(art.explainer, art.model)

    test = dataset.split(train=False)
    test_acts = session.activations(test, strict=False)
    test = [test[i] for i in test_acts.index]
    labels = np.array([dataset.class_index(r.class_id) for r in test])
    predicted = test_acts.logits.argmax(axis=1)
    truths = [set(truth["images"][r.image_id]["attributes"]) for r in test]

    train = dataset.with_captions(dataset.split(train=True))
    train_acts = session.activations(train, progress=False, strict=False)
    train = [train[i] for i in train_acts.index]
    # the refits take phi(x) (the demo explainer's rows may add part pools and peaks after it); a config
    # that pools evidence under part maps runs its own pass with the maps (activations=None)
    f = art.explainer.n_filters_
    phi_train = dataclasses.replace(train_acts, pooled=train_acts.pooled[:, :f])
    phi_test = test_acts.pooled[:, :f]

    def test_rows(explainer: Explainer) -> np.ndarray:
        """The test images' activations as ``explainer`` takes them (phi(x), or the rows made from the maps)."""
        if not explainer.reads_maps:
            return phi_test
        return ExplainerSession(explainer, art.model, session.preprocess).activations(test).pooled
    extractor = PhraseExtractor(cache_dir=workspace.phrase_cache)
    train_documents = extractor.extract_documents([list(r.captions) for r in train])
    train_classes = [dataset.class_index(r.class_id) for r in train]

    rows = {}
    timings = {}
    for name, config in VARIANTS.items():
        t0 = time.perf_counter()
        pools = config.for_fit(part_maps=True).pools_evidence
        explainer, _ = fit_explainer(dataset, art.model, session.preprocess, config, extractor=extractor,
                                     progress=False, activations=None if pools else phi_train)
        timings[name] = time.perf_counter() - t0
        rows_in = test_rows(explainer)
        explanations = explainer.explain(rows_in, predicted)
        tops = [[t for t, _ in e.attributes] for e in explanations]
        used = Counter(t for top in tops for t in top)
        rows[name] = {
            "config": asdict(config),
            "precision_at_5": precision(tops, truths, synonyms),
            "contrast": contrast_hits(explainer, rows_in, test, dataset.class_index,
                                      truth["confusable_pairs"], synonyms),
            "distinct_attributes": len(used),
            "most_common_share": used.most_common(1)[0][1] / len(tops) if used else 0.0,
            "fit_seconds": round(timings[name], 2),
        }
        print(f"{name:38s} precision@5 {rows[name]['precision_at_5']:.3f}  "
              f"contrast {rows[name]['contrast']['share']:.3f}", file=sys.stderr)

    paper = fit_explainer(dataset, art.model, session.preprocess, ExplainerConfig.paper(), extractor=extractor,
                          progress=False, activations=phi_train)[0]
    k = paper.config.top_k
    baselines = {
        "class's most frequent caption attributes": precision(
            class_frequency_baseline(paper, train_documents, train_classes, predicted, k), truths, synonyms),
        "constant filter-attribute p.d.f.": precision(constant_pdf_baseline(paper, len(test), k), truths, synonyms),
    }
    result = {
        "command": "make benchmark  (= .venv/bin/python benchmarks/synthbirds.py)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "test_images": len(test),
        "cnn_test_accuracy": float((predicted == labels).mean()),
        "cnn_train_seconds": art.model_meta.get("train_seconds"),
        "variants": rows,
        "baselines_precision_at_5": baselines,
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    write_markdown(result)
    print(f"wrote {RESULTS} and {MARKDOWN}")
    return 0


def write_markdown(result: dict) -> None:
    lines = [
        BEGIN,
        f"Command: `{result['command']}`; {result['test_images']} synthbirds test images; "
        f"whole run {result['seconds']} s on {result['machine']}.",
        "",
        f"Demo CNN test accuracy: **{result['cnn_test_accuracy']:.1%}** (goal >= 95%).",
        "",
        "| method | precision@5 vs true attributes (goal >= 0.8) | contrast names a differing attribute (goal >= 90%) | distinct attributes | most common attribute's share |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in result["variants"].items():
        lines.append(f"| {name} | {row['precision_at_5']:.3f} | {row['contrast']['share']:.1%} "
                     f"({row['contrast']['images']} images) | {row['distinct_attributes']} | {row['most_common_share']:.0%} |")
    for name, value in result["baselines_precision_at_5"].items():
        lines.append(f"| baseline: {name} | {value:.3f} | - | - | - |")
    lines.append(END)
    text = MARKDOWN.read_text() if MARKDOWN.exists() else "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    MARKDOWN.write_text(head + "\n".join(lines) + tail)


if __name__ == "__main__":
    sys.exit(main())
