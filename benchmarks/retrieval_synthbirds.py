"""Tables 2 and 3 and the network-debugging count on the demo's synthbirds test images.

Measures, in one run, with the demo's small CNN and fitted explainer:
- attribute retrieval (Table 2) for the 50 most frequent caption attributes of the test
  images: recall, true negative rate, precision (the paper's "accuracy"), binary
  accuracy, P@10 and mAP, beside a seeded random baseline with the same set sizes;
- sentence BLEU-1..4 of the explanations against the captions (Table 3), for correctly
  classified, misclassified and all test images;
- the number of failures (misclassified test images) that ``saywhy debug`` explains;
- with ``--noise 0.05`` (default), the same on a copy of synthbirds whose labels are 5%
  flipped (same drawings, same model): failures there are mostly label errors, the
  paper's third failure pattern, and the wrong-group BLEU has enough images.

Writes benchmarks/results/retrieval_synthbirds.json. Run:
    .venv/bin/python benchmarks/retrieval_synthbirds.py --home /tmp/retrieval_home
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from saywhy.apps.debugging import debug_network
from saywhy.apps.phrase_stats import top_phrases
from saywhy.apps.retrieval import evaluate_attribute_retrieval
from saywhy.data.cub import read_cub
from saywhy.data.synthbirds import SynthConfig, load_truth
from saywhy.demo import ensure_demo, ensure_synthbirds
from saywhy.evaluate import parsed_split
from saywhy.metrics.bleu import bleu_by_correctness, bleu_signature
from saywhy.pipeline import ExplainerSession
from saywhy.text.phrases import PhraseExtractor
from saywhy.workspace import Workspace

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "retrieval_synthbirds.json"


def measure(session: ExplainerSession, dataset, extractor: PhraseExtractor, seed: int) -> dict:
    """Table 2, Table 3 and the failure count on one dataset's test split."""
    explainer = session.explainer
    test = dataset.split(train=False)
    kept, acts, documents = parsed_split(session, test, extractor)
    retrieval = evaluate_attribute_retrieval(explainer, acts.pooled, documents, n_attributes=50, k=10, seed=seed)
    predicted = explainer.predict(acts.pooled)
    labels = np.array([dataset.class_index(r.class_id) for r in kept])
    sentences = [e.sentence for e in explainer.explain(acts.pooled)]
    bleu = bleu_by_correctness(sentences, [r.captions for r in kept], predicted == labels)
    debug = debug_network(session, dataset, kept, canonical=False)
    return {"n_test_images": len(test), "unreadable": acts.n_unreadable, "accuracy": float((predicted == labels).mean()),
            "retrieval": retrieval.to_dict(), "bleu": bleu.to_dict(),
            "debug": {k: v for k, v in debug.to_dict().items() if k != "failures"},
            "failed_image_ids": [f.image_id for f in debug.failures],
            "figure9": top_phrases(documents, 100).to_dict()}


def table(name: str, result: dict) -> str:
    r, b = result["retrieval"], result["bleu"]
    lines = [(f"## {name}: {result['n_test_images']} test images, accuracy {result['accuracy']:.2%}, "
              f"{result['debug']['n_failures']} failures"),
             (f"Table 2 (over {len(r['attributes'])} attributes)       recall   TNR    precision(=paper accuracy)  "
              "accuracy   P@10    mAP")]
    for who in ("method", "random"):
        for avg in ("macro", "micro"):
            m = r[who][avg]
            tail = (f"      {m['precision_at_10']:.3f}   {m['average_precision']:.3f}" if avg == "macro" else "")
            lines.append(f"  {who + ' ' + avg:<34} {m['recall']:.3f}   {m['true_negative_rate']:.3f}  "
                         f"{m['precision']:.3f}                       {m['accuracy']:.3f}{tail}")
    lines.append(f"  (macro precision over the {r['method']['n_defined']['precision']} attributes that the method's "
                 "top-5 explanations ever name; micro pools the counts of all 50)")
    lines.append("Table 3 (mean sentence BLEU, [0,1])   " + "  ".join(f"BLEU-{n}" for n in range(1, 5)) + "   images")
    for group in ("correct", "wrong", "overall"):
        means = b["means"][group]
        cells = "  ".join("  n/a " if means[f"BLEU-{n}"] is None else f"{means[f'BLEU-{n}']:.3f} " for n in range(1, 5))
        lines.append(f"  {group:<36} {cells}   {b['counts'][group]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="workspace (default $SAYWHY_HOME or ./.saywhy)")
    parser.add_argument("--noise", type=float, default=0.05, help="label noise of the second run (0: skip it)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    workspace = Workspace(args.home) if args.home else Workspace.default()
    art = ensure_demo(workspace, progress=False)
    session = ExplainerSession(art.explainer, art.model)
    extractor = PhraseExtractor(cache_dir=workspace.phrase_cache)
    result = {"explainer": str(art.explainer_path), "config": art.explainer.config.__dict__,
              "bleu_signature": bleu_signature(4), "clean": measure(session, art.dataset, extractor, args.seed)}
    print(table("synthbirds (demo, clean labels)", result["clean"]))
    top = result["clean"]["figure9"]["phrases"][:10]
    print("Figure 9, top 10 of 100 (total occurrences / images): "
          + ", ".join(f"{p['phrase']} {p['total']}/{p['images']}" for p in top))
    if args.noise > 0:
        synth = replace(SynthConfig(), label_noise=args.noise)
        root = ensure_synthbirds(workspace, synth, progress=False)
        noisy = measure(session, read_cub(root), extractor, args.seed)
        flipped = set(load_truth(root)["noisy_labels"])
        noisy["failures_with_flipped_label"] = sum(i in flipped for i in noisy["failed_image_ids"])
        noisy["flipped_test_labels"] = sum(not r.is_train and r.image_id in flipped for r in read_cub(root).records)
        result[f"label_noise_{args.noise}"] = noisy
        print()
        print(table(f"synthbirds with {args.noise:.0%} flipped labels (same model)", noisy))
        print(f"  failures whose label was flipped: {noisy['failures_with_flipped_label']} "
              f"(flipped test labels: {noisy['flipped_test_labels']})")
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {RESULTS} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
