"""``saywhy evaluate``: the paper's Tables 1-3 and saywhy's own checks, in one run.

Every row stands beside its baselines, measured on the same images in the same run:
- Table 1, attribute grounding PCK (eq. 9) against random, constant p.d.f., box centre,
  CAM peak and Grad-CAM peak (:mod:`saywhy.apps.grounding`);
- Table 2, attribute retrieval against a random ranking (:mod:`saywhy.apps.retrieval`);
- Table 3, explanation BLEU for correct, wrong and all images (:mod:`saywhy.metrics.bleu`);
- network debugging's failure summary, faithfulness (filter removal), the figures as
  data (Figure 5 filters, Figure 9 phrases), and, where ground truth exists
  (synthbirds), precision of explained attributes and of contrasts.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from saywhy.apps.debugging import debug_network
from saywhy.apps.faithfulness import faithfulness
from saywhy.apps.grounding import GROUNDING_METHODS, filter_figure, grounding_pck
from saywhy.apps.phrase_stats import top_phrases
from saywhy.apps.retrieval import evaluate_attribute_retrieval, score_retrieval
from saywhy.apps.text_baselines import class_attribute_frequency, fixed_attributes, own_attributes, top_attributes
from saywhy.data.records import Dataset, ImageRecord
from saywhy.explain.names import readable_class_name
from saywhy.metrics.bleu import bleu_by_correctness, bleu_signature
from saywhy.model.activations import Activations
from saywhy.pipeline import ExplainerSession, SpilledMaps
from saywhy.text.phrases import PhraseExtractor

# The paper's reported figures, shown beside ours.
PAPER = {
    "pck": {"random": (3.1, 12.6, 28.3), "constant p.d.f.": (8.5, 28.1, 47.5), "proposed": (12.2, 38.7, 60.9)},
    "retrieval": {"recall": 30.9, "true_negative_rate": 92.9, "accuracy": 27.9},
    "bleu": {"correct": 0.415, "wrong": 0.381, "overall": 0.409},
}


def canonical(phrase: str, synonyms: Mapping[str, str] | None) -> str:
    return " ".join(synonyms.get(w, w) for w in phrase.split()) if synonyms else phrase


def truth_checks(session: ExplainerSession, pooled: np.ndarray, records, dataset: Dataset, truth: dict) -> dict:
    """Where every image's attributes are known: precision@k, contrasts and the top attribute vs the twin."""
    explainer, synonyms = session.explainer, truth.get("synonyms")
    explanations = explainer.explain(pooled)
    truths = [set(truth["images"][r.image_id]["attributes"]) for r in records]
    precision = np.mean([np.mean([canonical(t, synonyms) in tr for t, _ in e.attributes]) for e, tr in zip(explanations, truths)])
    twin_of = {}
    for pair in truth.get("confusable_pairs", []):
        twin_of[pair["a"]] = (pair["b"], set(pair["a_only"]), set(pair["a_only"] + pair["b_only"]))
        twin_of[pair["b"]] = (pair["a"], set(pair["b_only"]), set(pair["a_only"] + pair["b_only"]))
    contrast_hits, top_separates, n = 0, 0, 0
    for row, record in enumerate(records):
        if record.class_id not in twin_of:
            continue
        other, own, differing = twin_of[record.class_id]
        mine = dataset.class_index(record.class_id)
        contrast = explainer.contrast(pooled[row], mine, dataset.class_index(other))
        contrast_hits += bool({canonical(t, synonyms) for t, _ in contrast.favour + contrast.against} & differing)
        top = explainer.explain(pooled[row:row + 1], np.array([mine]))[0].attributes[0][0]
        top_separates += canonical(top, synonyms) in own
        n += 1
    return {"precision_at_k": float(precision), "k": explainer.config.top_k,
            "contrast_names_differing_attribute": contrast_hits / max(1, n),
            "top_attribute_separates_from_twin": top_separates / max(1, n), "confusable_pair_images": n}


def parsed_split(session: ExplainerSession, records: Sequence[ImageRecord], extractor: PhraseExtractor
                 ) -> tuple[list[ImageRecord], Activations, list[list[str] | None]]:
    """The readable records, their activations, and each one's caption phrases (None without captions)."""
    acts = session.activations(records, strict=False)
    kept = [records[i] for i in acts.index]
    parsed = iter(extractor.extract_documents([list(r.captions) for r in kept if r.captions is not None]))
    return kept, acts, [next(parsed) if r.captions is not None else None for r in kept]


def text_baselines(session: ExplainerSession, dataset: Dataset, extractor: PhraseExtractor,
                   documents: Sequence[list[str] | None], kept: Sequence[ImageRecord], predicted: np.ndarray,
                   correct: np.ndarray, seed: int = 0) -> dict[str, dict]:
    """Retrieval and BLEU of explanations that never look at the image (:mod:`saywhy.apps.text_baselines`),
    on the same captioned test images as the method, written in the explainer's sentence style."""
    explainer = session.explainer
    k, vocabulary = explainer.config.top_k, explainer.vocabulary_
    train = dataset.with_captions(dataset.split(train=True))
    train_docs = extractor.extract_documents([list(r.captions) for r in train])
    labels = [dataset.class_index(r.class_id) for r in train]
    frequency = class_attribute_frequency(train_docs, labels, vocabulary, len(explainer.class_names_))
    rows = [i for i, d in enumerate(documents) if d is not None]
    classes, captions, right = predicted[rows], [kept[i].captions for i in rows], correct[rows]
    fixed = fixed_attributes(train_docs, k)
    chosen = {
        "class caption frequency": top_attributes(frequency[classes], vocabulary, k),
        "fixed sentence": [fixed] * len(rows),
        "own captions (upper reference)": [own_attributes(documents[i], k) for i in rows],
    }
    out = {}
    for name, attributes in chosen.items():
        sentences = [explainer.write(int(c), a) for c, a in zip(classes, attributes)]
        used = Counter(t for a in attributes for t in a)
        row = {"bleu": bleu_by_correctness(sentences, captions, right).means["overall"],
               "distinct_attributes": len(used),
               "most_common_share": used.most_common(1)[0][1] / max(1, len(rows)) if used else 0.0,
               "example": sentences[0] if sentences else None}
        if name == "class caption frequency":
            macro = score_retrieval(frequency[classes], vocabulary, documents, k, 50, 10, seed).report.to_dict()["method"]["macro"]
            row.update(retrieval_map=macro["average_precision"], retrieval_recall=macro["recall"],
                       retrieval_tnr=macro["true_negative_rate"])
        out[name] = row
    return out


def evaluate(session: ExplainerSession, dataset: Dataset, extractor: PhraseExtractor, truth: dict | None = None,
             seed: int = 0, grounding_source: str = "captions", n_figure_filters: int = 3,
             grounding_size: int | None = None, grounding_methods: Sequence[str] | None = None,
             baselines: bool = True) -> dict[str, Any]:
    """Run every evaluation on the dataset's test split and return JSON-able results.

    ``grounding_source``: ground the attributes parsed from each image's captions (the
    paper's protocol) or, where ``truth`` is given, the true attributes ("truth").
    ``grounding_size``: run the network at this input size for grounding only (finer
    final maps from a fully convolutional network); None keeps the model's own size.
    ``grounding_methods``: Table 1's rows, default every registered grounding method.
    ``baselines``: also measure the text-only explanations of :func:`text_baselines`.
    """
    started = time.perf_counter()
    explainer = session.explainer
    test = dataset.split(train=False)
    kept, acts, documents = parsed_split(session, test, extractor)
    with_captions = [r for r in kept if r.captions is not None]
    labels = np.array([dataset.class_index(r.class_id) for r in kept])
    predicted = explainer.predict(acts.pooled)
    correct = predicted == labels
    explanations = explainer.explain(acts.pooled)
    sentences = [e.sentence for e in explanations]
    used = Counter(t for e in explanations for t, _ in e.attributes)

    synonyms = truth.get("synonyms") if truth else None
    ground_docs = ([truth["images"][r.image_id]["attributes"] for r in kept]
                   if grounding_source == "truth" and truth else documents)
    grounding_session = session
    if grounding_size and grounding_size != session.preprocess.image_size:
        grounding_session = ExplainerSession(explainer, session.model,
                                             replace(session.preprocess, image_size=grounding_size),
                                             map_memo=session.map_memo)
    pck_table = grounding_pck(grounding_session, kept, ground_docs, synonyms=synonyms, seed=seed,
                              methods=grounding_methods)
    retrieval = evaluate_attribute_retrieval(explainer, acts.pooled, documents, n_attributes=50, k=10, seed=seed)
    bleu = bleu_by_correctness(sentences, [r.captions for r in kept], correct)
    debug = debug_network(session, dataset, kept, canonical=False)
    strongest = np.argsort(-acts.pooled.mean(axis=0))[:n_figure_filters]
    result: dict[str, Any] = {
        "dataset": str(dataset.root),
        "explainer_config": explainer.config.__dict__,
        "test_images": len(test),
        "unreadable": acts.n_unreadable,
        "test_images_with_captions": len(with_captions),
        "accuracy": float(correct.mean()),
        "explanations": {"distinct_attributes": len(used),
                         "most_common": [(t, n / max(1, len(kept))) for t, n in used.most_common(5)]},
        "table1_pck": pck_table.to_dict(),
        "table1_source": grounding_source,
        "table1_input_size": grounding_session.preprocess.image_size,
        "table2_retrieval": retrieval.to_dict(),
        "table3_bleu": bleu.to_dict(),
        "bleu_signature": bleu_signature(4),
        "debugging": {k: v for k, v in debug.to_dict().items() if k != "failures"},
        "faithfulness": faithfulness(explainer, acts.pooled, predicted, seed=seed),
        "figure5": [filter_figure(explainer, session, kept, int(k)) for k in strongest],
        "figure9": top_phrases([d for d in documents if d is not None], 100).to_dict(),
        "paper": PAPER,
    }
    if baselines and with_captions:
        result["baselines"] = text_baselines(session, dataset, extractor, documents, kept, predicted, correct, seed)
    if truth:
        result["truth"] = truth_checks(session, acts.pooled, kept, dataset, truth)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def markdown(result: dict[str, Any], title: str) -> str:
    """Tables shaped like the paper's, each row beside its baselines and the paper's figure."""
    lines = [f"### {title}", "",
             f"{result['test_images']} test images ({result['test_images_with_captions']} with captions), "
             f"accuracy {result['accuracy']:.1%}, explainer `{_config_line(result['explainer_config'])}`; "
             f"{result['seconds']} s.", ""]
    pck = result["table1_pck"]
    lines += [f"Table 1, attribute grounding PCK (%) over {len(pck['attributes'])} attributes "
              f"({result['table1_source']} attributes, network input {result['table1_input_size']} px):", "",
              "| method | PCK@0.1 | PCK@0.2 | PCK@0.3 | pairs | paper |", "| --- | --- | --- | --- | --- | --- |"]
    for method, r in pck["results"].items():
        values = [r["pck"].get(str(a)) for a in (0.1, 0.2, 0.3)]
        name = GROUNDING_METHODS[method].label if method in GROUNDING_METHODS else method
        paper = PAPER["pck"].get(name)
        lines.append(f"| {name} | " + " | ".join(_pct(v) for v in values) + f" | {r['scored']} | "
                     + ("/".join(f"{p:.1f}" for p in paper) if paper else "-") + " |")
    rt = result["table2_retrieval"]
    lines += ["", f"Table 2, attribute retrieval over the {len(rt['attributes'])} most frequent caption attributes "
              "(macro averages, %; accuracy = precision, see metrics/retrieval.py):", "",
              "| ranking | recall | TNR | accuracy (precision) | P@10 | mAP |", "| --- | --- | --- | --- | --- | --- |"]
    for who in ("method", "random"):
        m = rt[who]["macro"]
        lines.append(f"| {who} | {_pct(m['recall'])} | {_pct(m['true_negative_rate'])} | {_pct(m['precision'])} | "
                     f"{_pct(m['precision_at_10'])} | {_pct(m['average_precision'])} |")
    p = PAPER["retrieval"]
    lines.append(f"| paper | {p['recall']} | {p['true_negative_rate']} | {p['accuracy']} | - | - |")
    b = result["table3_bleu"]
    lines += ["", f"Table 3, sentence BLEU ({result['bleu_signature']}):", "",
              "| images | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | images | paper |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for group in ("correct", "wrong", "overall"):
        means = b["means"][group]
        lines.append(f"| {group} | " + " | ".join("n/a" if means[f"BLEU-{n}"] is None else f"{means[f'BLEU-{n}']:.3f}"
                                                   for n in range(1, 5)) + f" | {b['counts'][group]} | {PAPER['bleu'][group]} |")
    if result.get("baselines"):
        lines += ["", "Explanations that never look at the image, on the same captioned images, written in the "
                  "explainer's sentence style (see apps/text_baselines.py):", "",
                  "| baseline | retrieval mAP | recall | TNR | BLEU-1/2/4 | distinct attributes | top attribute's share |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, row in result["baselines"].items():
            bleu = "/".join(f"{row['bleu'][f'BLEU-{n}']:.3f}" for n in (1, 2, 4))
            lines.append(f"| {name} | {_pct(row.get('retrieval_map'))} | {_pct(row.get('retrieval_recall'))} | "
                         f"{_pct(row.get('retrieval_tnr'))} | {bleu} | {row['distinct_attributes']} | "
                         f"{100 * row['most_common_share']:.0f}% |")
    f = result["faithfulness"]["10"]
    lines += ["", "Faithfulness: class-score drop when 10 filters per image are zeroed:", "",
              "| filters removed | logit drop | probability drop | prediction flipped |", "| --- | --- | --- | --- |"]
    for who, r in f.items():
        lines.append(f"| {who} | {r['logit_drop']:.3f} | {_pct(r['probability_drop'])}% | {_pct(r['flipped'])}% |")
    d = result["debugging"]
    lines += ["", f"Network debugging: {d.get('n_failures', 0)} misclassified test images; most confused pairs: "
              + ", ".join(f"{c['true']} -> {c['predicted']} ({c['count']})" for c in d.get("confused_pairs", [])[:3])]
    if "truth" in result:
        t = result["truth"]
        lines += ["", f"Against ground truth: precision@{t['k']} {t['precision_at_k']:.3f}; contrasts naming a truly "
                  f"differing attribute {_pct(t['contrast_names_differing_attribute'])}%; top attribute separates the "
                  f"class from its twin {_pct(t['top_attribute_separates_from_twin'])}% "
                  f"({t['confusable_pair_images']} images of confusable pairs)."]
    e = result["explanations"]
    lines += ["", f"Distinct attributes across test explanations: {e['distinct_attributes']}; most common: "
              + ", ".join(f"{t} {100 * s:.0f}%" for t, s in e["most_common"]) + "."]
    if result.get("ablation"):
        lines += ["", "Ablation (same images, same run):", "",
                  "| config | PCK@0.1/0.2/0.3 | constant p.d.f. | retrieval mAP | recall | TNR | BLEU-1/2/4 | "
                  "distinct attributes | top attribute's share | precision@k | contrast |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, row in result["ablation"].items():
            pck_cells = "/".join(_pct(row["pck"][a]) for a in ("0.1", "0.2", "0.3"))
            constant = "/".join(_pct(row["constant_pck"][a]) for a in ("0.1", "0.2", "0.3"))
            bleu = "/".join(f"{row['bleu'][f'BLEU-{n}']:.3f}" for n in (1, 2, 4))
            lines.append(f"| {name} | {pck_cells} | {constant} | {_pct(row['retrieval_map'])} | "
                         f"{_pct(row['retrieval_recall'])} | {_pct(row['retrieval_tnr'])} | {bleu} | "
                         f"{row['distinct_attributes']} | {100 * row['most_common_share']:.0f}% | "
                         + (f"{row['precision_at_k']:.3f} | {_pct(row['contrast_names_differing_attribute'])}% |"
                            if "precision_at_k" in row else "- | - |"))
    return "\n".join(lines) + "\n"


def _config_line(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def ablation(session: ExplainerSession, dataset: Dataset, extractor: PhraseExtractor, configs: Mapping[str, Any],
             truth: dict | None = None, seed: int = 0) -> dict[str, dict]:
    """The headline numbers for several explainer configs on the same images.

    The fitting images' activations are computed once and shared by every config.
    """
    from saywhy.pipeline import fit_explainer

    fitting = dataset.with_captions(dataset.split(train=True))
    train_activations = session.activations(fitting, strict=False)
    memo = session.map_memo if session.map_memo is not None else SpilledMaps()  # maps on disk: memory stays flat
    rows = {}
    for name, config in configs.items():
        explainer, _ = fit_explainer(dataset, session.model, session.preprocess, config, extractor=extractor,
                                     progress=False, activations=train_activations)
        variant = ExplainerSession(explainer, session.model, session.preprocess, session.feature_cache, memo)
        result = evaluate(variant, dataset, extractor, truth, seed, n_figure_filters=0,
                          grounding_methods=("proposed", "constant"), baselines=False)
        rows[name] = summary_row(result)
    return rows


def ablation_configs() -> dict[str, Any]:
    """The rows of ``saywhy evaluate --ablation``: the paper's exact method and each of saywhy's choices."""
    from saywhy.explain.explainer import ExplainerConfig

    return {
        "paper (--method paper)": ExplainerConfig.paper(),
        "paper + natural sentences": ExplainerConfig.paper(sentence="natural"),
        "p(t|f) top 10%, margin contrast, natural sentences": ExplainerConfig(attribute_model="cooccurrence"),
        "evidence model, image only (no eq. 6 weighting)": ExplainerConfig(class_weighting=False),
        "evidence model, paper sentences": ExplainerConfig(sentence="paper"),
        "evidence model, part grounding (the mean over a part's attributes)": ExplainerConfig(grounding="part"),
        "evidence model, positive grounding": ExplainerConfig(grounding="positive"),
        "saywhy default (evidence model, eq. 6 weighting, signed grounding)": ExplainerConfig(),
    }


def summary_row(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers an ablation table shows for one config."""
    pck = result["table1_pck"]["results"]
    method = pck.get("proposed", next(iter(pck.values()), {}))
    row = {
        "pck": method.get("pck"),
        "constant_pck": pck.get("constant", {}).get("pck"),
        "retrieval_map": result["table2_retrieval"]["method"]["macro"]["average_precision"],
        "retrieval_recall": result["table2_retrieval"]["method"]["macro"]["recall"],
        "retrieval_tnr": result["table2_retrieval"]["method"]["macro"]["true_negative_rate"],
        "bleu": result["table3_bleu"]["means"]["overall"],
        "distinct_attributes": result["explanations"]["distinct_attributes"],
        "most_common_share": result["explanations"]["most_common"][0][1] if result["explanations"]["most_common"] else 0,
    }
    if "truth" in result:
        row.update({k: result["truth"][k] for k in ("precision_at_k", "contrast_names_differing_attribute")})
    return row


def record_sample(session: ExplainerSession, dataset: Dataset, records: Sequence, n: int = 10,
                  seed: int = 0) -> list[dict]:
    """A seeded random draw of captioned test images with their explanation and true captions."""
    rng = np.random.default_rng(seed)
    pool = [r for r in records if r.captions]
    chosen = [pool[i] for i in sorted(rng.choice(len(pool), min(n, len(pool)), replace=False))]
    return [{"image": str(r.path), "true_class": readable_class_name(dataset.class_names[r.class_id]),
             "explanation": e.sentence, "captions": list(r.captions)}
            for r, e in zip(chosen, session.explain(chosen))]
