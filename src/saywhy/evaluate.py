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

import dataclasses

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from saywhy.apps.debugging import debug_network
from saywhy.apps.faithfulness import faithfulness
from saywhy.apps.grounding import GROUNDING_METHODS, filter_figure, grounding_pck
from saywhy.apps.occlusion import invisible_parts, occlusion_sample, occlusion_test
from saywhy.apps.phrase_stats import top_phrases
from saywhy.apps.retrieval import PAPER_TNR, evaluate_attribute_retrieval, retrieval_at_tnr, score_retrieval
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


def training_captions(explainer, dataset: Dataset, extractor: PhraseExtractor, train: Sequence[ImageRecord]
                      ) -> tuple[list[list[str]], np.ndarray]:
    """The captioned training images' phrases, written with the explainer's synonym groups, and the
    class caption frequency they give (the image-blind baseline: per class, the share naming t)."""
    docs = [explainer.synonyms_.terms(d) for d in extractor.extract_documents([list(r.captions) for r in train])]
    labels = [dataset.class_index(r.class_id) for r in train]
    return docs, class_attribute_frequency(docs, labels, explainer.vocabulary_, len(explainer.class_names_))


def parsed_split(session: ExplainerSession, records: Sequence[ImageRecord], extractor: PhraseExtractor
                 ) -> tuple[list[ImageRecord], Activations, list[list[str] | None]]:
    """The readable records, their activations, and each one's caption phrases (None without captions),
    written with the explainer's synonym groups ("black bill" counts as its "black beak")."""
    acts = session.activations(records, strict=False)
    kept = [records[i] for i in acts.index]
    merge = session.explainer.synonyms_.terms
    parsed = iter(merge(d) for d in extractor.extract_documents([list(r.captions) for r in kept if r.captions is not None]))
    return kept, acts, [next(parsed) if r.captions is not None else None for r in kept]


def text_baselines(session: ExplainerSession, dataset: Dataset, extractor: PhraseExtractor,
                   documents: Sequence[list[str] | None], kept: Sequence[ImageRecord], predicted: np.ndarray,
                   correct: np.ndarray, seed: int = 0) -> dict[str, dict]:
    """Retrieval and BLEU of explanations that never look at the image (:mod:`saywhy.apps.text_baselines`),
    on the same captioned test images as the method, written in the explainer's sentence style."""
    explainer = session.explainer
    k, vocabulary = explainer.config.top_k, explainer.vocabulary_
    train = dataset.with_captions(dataset.split(train=True))
    train_docs, frequency = training_captions(explainer, dataset, extractor, train)
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
               "example": sentences[0] if sentences else None,
               "sentences": sentence_quality(explainer, sentences, classes)}
        if name == "class caption frequency":
            macro = score_retrieval(frequency[classes], vocabulary, documents, k, 50, 10, seed).report.to_dict()["method"]["macro"]
            row.update(retrieval_map=macro["average_precision"], retrieval_recall=macro["recall"],
                       retrieval_tnr=macro["true_negative_rate"])
        out[name] = row
    return out


def retrieval_operating_point(session: ExplainerSession, dataset: Dataset, extractor: PhraseExtractor,
                              documents: Sequence[list[str] | None], pooled: np.ndarray, predicted: np.ndarray,
                              tnr: float = PAPER_TNR, seed: int = 0) -> dict[str, Any]:
    """Table 2 at the paper's TNR (:func:`saywhy.apps.retrieval.retrieval_at_tnr`), thresholds set on the
    captioned training images, for the method's ranking log p(t|x, predicted class) and for the class
    caption frequency baseline's (the share of the predicted class's training images naming t)."""
    explainer = session.explainer
    vocabulary = explainer.vocabulary_
    train = dataset.with_captions(dataset.split(train=True))
    train_acts = session.activations(train, strict=False)
    train = [train[i] for i in train_acts.index]
    rows = [i for i, d in enumerate(documents) if d is not None]
    if not rows or not train:
        return {}
    train_docs, frequency = training_captions(explainer, dataset, extractor, train)
    out = retrieval_at_tnr(explainer.retrieval_log_scores(train_acts.pooled), train_docs,
                           explainer.retrieval_log_scores(pooled[rows]), documents, vocabulary, tnr=tnr, seed=seed)
    train_predicted = explainer.predict(train_acts.pooled)
    baseline = retrieval_at_tnr(frequency[train_predicted], train_docs, frequency[predicted[rows]], documents,
                                vocabulary, tnr=tnr, seed=seed)
    out["class caption frequency"] = baseline["method"]
    return out


def image_specificity(session: ExplainerSession, dataset: Dataset, extractor: PhraseExtractor,
                      kept: Sequence[ImageRecord], documents: Sequence[list[str] | None], explanations: Sequence,
                      predicted: np.ndarray, seed: int = 0, occlusion_images: int = 150) -> dict[str, Any]:
    """Image-specificity against keypoints (:mod:`saywhy.apps.occlusion`), on the captioned test images,
    for the method's cited attributes beside the class caption frequency baseline's and the image's
    own captions' (the same k, the same images): the share of cited parts that are hidden in the
    image, and, on a seeded sample of ``occlusion_images`` of them (0: none), whether greying out
    the named part lowers the attribute's score more than greying out another part."""
    explainer = session.explainer
    k, vocabulary = explainer.config.top_k, explainer.vocabulary_
    rows = [i for i, d in enumerate(documents) if d is not None]
    if not rows:
        return {}
    train = dataset.with_captions(dataset.split(train=True))
    _, frequency = training_captions(explainer, dataset, extractor, train)
    records = [kept[i] for i in rows]
    classes = [int(explanations[i].class_index) for i in rows]
    cited = {"method": [[t for t, _ in explanations[i].attributes] for i in rows],
             "class caption frequency": top_attributes(frequency[predicted[rows]], vocabulary, k),
             "own captions (upper reference)": [own_attributes(documents[i], k) for i in rows]}
    out: dict[str, Any] = {"images": len(records), "invisible_parts": invisible_parts(records, cited)}
    if occlusion_images:
        sample = occlusion_sample(records, occlusion_images, seed)
        started = time.perf_counter()
        out["occlusion"] = occlusion_test(session, [records[i] for i in sample],
                                          {name: [lists[i] for i in sample] for name, lists in cited.items()},
                                          [classes[i] for i in sample], seed=seed)
        out["occlusion_images"] = len(sample)
        out["occlusion_seconds"] = round(time.perf_counter() - started, 1)
    return out


def sentence_quality(explainer: Any, sentences: Sequence[str], classes: Sequence[int]) -> dict[str, Any]:
    """Issue 11: shares of sentences with a missing article, a repeated synonym, a repeated reason or a
    vague word, by :mod:`saywhy.metrics.sentences` with the explainer's own words."""
    from saywhy.metrics.sentences import SentenceChecker

    checker = SentenceChecker(explainer.vocabulary_, explainer.surface_forms_, explainer.synonyms_)
    return checker.report(sentences, [explainer.readable_name(int(c)) for c in classes]).to_dict()


def evaluate(session: ExplainerSession, dataset: Dataset, extractor: PhraseExtractor, truth: dict | None = None,
             seed: int = 0, grounding_source: str = "captions", n_figure_filters: int = 3,
             grounding_size: int | None = None, grounding_methods: Sequence[str] | None = None,
             baselines: bool = True, occlusion_images: int = 150) -> dict[str, Any]:
    """Run every evaluation on the dataset's test split and return JSON-able results.

    ``grounding_source``: ground the attributes parsed from each image's captions (the
    paper's protocol) or, where ``truth`` is given, the true attributes ("truth").
    ``grounding_size``: run the network at this input size for grounding only (finer
    final maps from a fully convolutional network); None keeps the model's own size.
    ``grounding_methods``: Table 1's rows, default every registered grounding method.
    ``baselines``: also measure the text-only explanations of :func:`text_baselines`.
    ``occlusion_images``: test images in the occlusion test of :func:`image_specificity` (0: none).
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
    at_tnr = retrieval_operating_point(session, dataset, extractor, documents, acts.pooled, predicted, seed=seed)
    bleu = bleu_by_correctness(sentences, [r.captions for r in kept], correct)
    debug = debug_network(session, dataset, kept, canonical=False)
    strongest = np.argsort(-acts.pooled[:, :explainer.n_filters_].mean(axis=0))[:n_figure_filters]
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
        "table2_at_paper_tnr": at_tnr,
        "table3_bleu": bleu.to_dict(),
        "bleu_signature": bleu_signature(4),
        "debugging": {k: v for k, v in debug.to_dict().items() if k != "failures"},
        "faithfulness": faithfulness(explainer, acts.pooled, predicted, seed=seed),
        "figure5": [filter_figure(explainer, session, kept, int(k)) for k in strongest],
        "figure9": top_phrases([d for d in documents if d is not None], 100).to_dict(),
        "paper": PAPER,
    }
    result["sentences"] = sentence_quality(explainer, sentences, [e.class_index for e in explanations])
    if baselines and with_captions:
        result["baselines"] = text_baselines(session, dataset, extractor, documents, kept, predicted, correct, seed)
    if with_captions:
        result["image_specificity"] = image_specificity(session, dataset, extractor, kept, documents, explanations,
                                                        predicted, seed, occlusion_images)
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
              "| method | PCK@0.1 | PCK@0.2 | PCK@0.3 | pairs | paper | part discrimination | attribute pairs |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, r in pck["results"].items():
        disc = pck.get("part_discrimination", {}).get(method, {})
        values = [r["pck"].get(str(a)) for a in (0.1, 0.2, 0.3)]
        name = GROUNDING_METHODS[method].label if method in GROUNDING_METHODS else method
        paper = PAPER["pck"].get(name)
        lines.append(f"| {name} | " + " | ".join(_pct(v) for v in values) + f" | {r['scored']} | "
                     + ("/".join(f"{p:.1f}" for p in paper) if paper else "-")
                     + f" | {_pct(disc.get('rate'))} | {disc.get('pairs', 0)} |")
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
    lines += tnr_lines(result.get("table2_at_paper_tnr"))
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
    lines += specificity_lines(result.get("image_specificity"))
    lines += _sentence_lines(result)
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
                  "| config | PCK@0.1/0.2/0.3 | constant p.d.f. | part discrimination | part-contrasted alpha: PCK, "
                  "discrimination | retrieval mAP | recall | TNR | recall at TNR 92.9 | invisible share | BLEU-1/2/4 | "
                  "distinct attributes | top attribute's share | precision@k | contrast |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, row in result["ablation"].items():
            pck_cells = "/".join(_pct(row["pck"][a]) for a in ("0.1", "0.2", "0.3"))
            constant = "/".join(_pct(row["constant_pck"][a]) for a in ("0.1", "0.2", "0.3"))
            bleu = "/".join(f"{row['bleu'][f'BLEU-{n}']:.3f}" for n in (1, 2, 4))
            contrast = ("/".join(_pct(row["contrast_pck"][a]) for a in ("0.1", "0.2", "0.3"))
                        + f", {_pct(row['contrast_discrimination'])}") if row.get("contrast_pck") else "-"
            lines.append(f"| {name} | {pck_cells} | {constant} | {_pct(row.get('part_discrimination'))} | {contrast} | "
                         f"{_pct(row['retrieval_map'])} | "
                         f"{_pct(row['retrieval_recall'])} | {_pct(row['retrieval_tnr'])} | "
                         f"{_pct(row.get('recall_at_paper_tnr'))} | {_pct(row.get('invisible_share'))} | {bleu} | "
                         f"{row['distinct_attributes']} | {100 * row['most_common_share']:.0f}% | "
                         + (f"{row['precision_at_k']:.3f} | {_pct(row['contrast_names_differing_attribute'])}% |"
                            if "precision_at_k" in row else "- | - |"))
    if result.get("grounding_ablation"):
        lines += ["", "Grounding ablation: finer final maps (the network at a larger input for grounding only), "
                  "same test images and attributes:", "",
                  "| variant | PCK@0.1/0.2/0.3 | part discrimination | part-contrasted alpha PCK | its discrimination | "
                  "constant p.d.f. |", "| --- | --- | --- | --- | --- | --- |"]
        for name, row in result["grounding_ablation"].items():
            cells = lambda p: "/".join(_pct(p[a]) for a in ("0.1", "0.2", "0.3")) if p else "-"  # noqa: E731
            lines.append(f"| {name} | {cells(row['pck'])} | {_pct(row['part_discrimination'])} | "
                         f"{cells(row['contrast_pck'])} | {_pct(row['contrast_discrimination'])} | "
                         f"{cells(row['constant_pck'])} |")
    return "\n".join(lines) + "\n"


def tnr_lines(at: dict | None) -> list[str]:
    """Table 2 at the paper's operating point (:func:`retrieval_operating_point`)."""
    if not at:
        return []
    lines = ["", f"Table 2 at the paper's operating point: per attribute, the threshold giving TNR "
             f"{100 * at['target_tnr']:.1f}% on the {at['train_images']} captioned training images, applied to the "
             f"{at['test_images']} captioned test images (same {at['attributes']} attributes, macro %):", "",
             "| ranking | recall | TNR | precision | mAP |", "| --- | --- | --- | --- | --- |"]
    for name in ("method", "method, threshold set on the test images (reference)", "class caption frequency", "random"):
        if name in at:
            m = at[name]
            lines.append(f"| {name} | {_pct(m['recall'])} | {_pct(m['true_negative_rate'])} | {_pct(m['precision'])} | "
                         f"{_pct(m.get('average_precision'))} |")
    return lines


def specificity_lines(spec: dict | None) -> list[str]:
    """The invisible-part and occlusion tables of :func:`image_specificity`."""
    if not spec:
        return []
    lines = ["", f"Image-specificity against keypoints, on {spec['images']} captioned test images: share of cited "
             "part-attributes whose part is annotated invisible in the image (lower is better), and, on a seeded "
             f"sample of {spec.get('occlusion_images', 0)} of them, occlusion: a square of side 0.2 x max(box w, h) "
             "greyed out (preprocessing mean) on the attribute's own part or on another visible part; score = "
             "log-odds of the score explanations show (calibrated p(t|x) with the evidence model), read by the network "
             "for every citer (the class caption frequency's own score never changes: it ignores the image):", "",
             "| cited by | invisible share | cited part-attributes | own part drops more | cases | mean own drop | "
             "mean other drop | own part drops more, ranking score (eq. 5-6 log-odds) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    occlusion = spec.get("occlusion", {})
    for name, row in spec["invisible_parts"].items():
        o = occlusion.get(name, {})
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {name} | {_pct(row['invisible_share'])}% | {row['scored']} | "
                     f"{_pct(o.get('own_part_drops_more'))}% | {o.get('cases', 0)} | {fmt(o.get('mean_own_drop'))} | "
                     f"{fmt(o.get('mean_other_drop'))} | {_pct(o.get('ranking_score', {}).get('own_part_drops_more'))}% |")
    return lines


def _sentence_lines(result: dict[str, Any]) -> list[str]:
    """Issue 11's sentence checks (metrics/sentences.py) for the method and each text baseline."""
    if "sentences" not in result:
        return []
    rows = {"method": result["sentences"],
            **{name: row["sentences"] for name, row in result.get("baselines", {}).items() if "sentences" in row}}
    lines = ["", "Sentences as people write them: share with each problem (%, metrics/sentences.py):", "",
             "| sentences | missing article | repeated synonym | repeated reason | vague word | sentences |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {_pct(r['missing_article'])} | {_pct(r['repeated_synonym'])} | "
                     f"{_pct(r['repeated_reason'])} | {_pct(r['vague_word'])} | {r['n_sentences']} |")
    return lines


def _config_line(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def ablation(session: ExplainerSession, dataset: Dataset, extractor: PhraseExtractor, configs: Mapping[str, Any],
             truth: dict | None = None, seed: int = 0) -> dict[str, dict]:
    """The headline numbers for several explainer configs on the same images.

    The fitting images' activations are computed once and shared by every config.
    """
    import tempfile
    from pathlib import Path

    from saywhy.pipeline import spilled_map_activations

    fitting = dataset.with_captions(dataset.split(train=True))
    keypoints = any(r.keypoints for r in dataset.split(train=True))
    spill = None
    if keypoints and any(config.for_fit(part_maps=True).pools_evidence for config in configs.values()):
        # the fitting images' maps once, on disk, for every row that pools evidence under part maps
        spill = tempfile.TemporaryDirectory(prefix="saywhy-maps-")
        train_activations = spilled_map_activations(session.model, fitting, session.preprocess, session.layers,
                                                    Path(spill.name), session.feature_cache)
    else:
        train_activations = session.activations(fitting, strict=False)
    f = session.explainer.n_filters_
    if train_activations.pooled.shape[1] != f:  # an explainer that reads the maps: phi(x) comes first, the fits take it
        train_activations = dataclasses.replace(train_activations, pooled=train_activations.pooled[:, :f])
    memo = session.map_memo if session.map_memo is not None else SpilledMaps()  # maps on disk: memory stays flat
    try:
        return _ablation_rows(session, dataset, extractor, configs, truth, seed, train_activations, memo)
    finally:
        if spill is not None:
            spill.cleanup()


def _ablation_rows(session, dataset, extractor, configs, truth, seed, train_activations, memo) -> dict[str, dict]:
    from saywhy.pipeline import fit_explainer, fit_part_maps

    rows, part_maps = {}, None
    for name, config in configs.items():
        explainer, _ = fit_explainer(dataset, session.model, session.preprocess, config, extractor=extractor,
                                     progress=False, activations=train_activations)
        # a config that reads the part maps gets them (part-pooled evidence has fitted its own already)
        if (config.part_visibility or config.part_grounding != "none") and not explainer.has_part_maps:
            if part_maps is None:  # fitted once: they depend on the network and the keypoints, not on the config
                part_maps = fit_part_maps(explainer, session.model, session.preprocess, dataset.split(train=True))
            elif part_maps:
                explainer.set_part_maps(part_maps.part_maps_, part_maps.attribute_parts_, part_maps.part_maps_settings_)
            part_maps = part_maps or False  # False: no keypoints, do not try again
        variant = ExplainerSession(explainer, session.model, session.preprocess, session.feature_cache, memo)
        result = evaluate(variant, dataset, extractor, truth, seed, n_figure_filters=0,
                          grounding_methods=("proposed", "part_contrast", "constant"), baselines=False,
                          occlusion_images=0)
        rows[name] = summary_row(result)
    return rows


GROUNDING_SCALES = (1.5,)  # larger inputs for grounding only, x the model's size, in ``evaluate --ablation``


def grounding_ablation(session: ExplainerSession, dataset: Dataset, extractor: PhraseExtractor,
                       truth: dict | None = None, seed: int = 0, scales: Sequence[float] = GROUNDING_SCALES) -> dict[str, dict]:
    """Table 1 for the session's own explainer with finer final maps: the network run at each of
    ``scales`` x its input size for grounding only (the decision and the explanation stay at the model's size), on the
    same test images and caption attributes; eq. 9, the part-contrasted alpha and the constant p.d.f."""
    kept, _, documents = parsed_split(session, dataset.split(train=False), extractor)
    synonyms = truth.get("synonyms") if truth else None
    rows = {}
    for size in (int(round(scale * session.preprocess.image_size)) for scale in scales):
        grounding_session = ExplainerSession(session.explainer, session.model,
                                             replace(session.preprocess, image_size=int(size)))
        table = grounding_pck(grounding_session, kept, documents, synonyms=synonyms, seed=seed,
                              methods=("proposed", "part_contrast", "constant")).to_dict()
        rows[f"the explainer's own config, grounding at {size} px input"] = {
            "input_size": int(size), **_grounding_cells(table)}
    return rows


def _grounding_cells(table: dict) -> dict[str, Any]:
    results, disc = table["results"], table.get("part_discrimination", {})
    return {"pck": results["proposed"]["pck"], "constant_pck": results.get("constant", {}).get("pck"),
            "part_discrimination": disc.get("proposed", {}).get("rate"),
            "contrast_pck": results.get("part_contrast", {}).get("pck"),
            "contrast_discrimination": disc.get("part_contrast", {}).get("rate")}


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
        "evidence model, eq. 9 grounding (no part maps)": ExplainerConfig(part_grounding="none"),
        "evidence model, part maps + visibility gating": ExplainerConfig(part_visibility=True),
        "evidence model, part-pooled evidence (--evidence-pooling part)": ExplainerConfig(evidence_pooling="part"),
        "evidence model, global pooling (--evidence-pooling global)": ExplainerConfig(evidence_pooling="global"),
        "evidence model, no caption smoothing (--evidence-smoothing 0)": ExplainerConfig(evidence_smoothing=0.0),
        "evidence model, no visibility threshold (--visibility-threshold 0)": ExplainerConfig(visibility_threshold=0.0),
        "evidence model, no located evidence (--no-located-evidence)": ExplainerConfig(located_evidence=False),
        "the stop-19 default (global pooling, no smoothing, no visibility threshold)": ExplainerConfig(
            evidence_pooling="global", evidence_smoothing=0.0, visibility_source="pooled", visibility_threshold=0.0,
            located_evidence=False),
        "saywhy default (evidence model, eq. 6 weighting, signed grounding; auto pooling, smoothing 0.25, peak "
        "threshold 0.8, located evidence)": ExplainerConfig(),
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
    cells = _grounding_cells(result["table1_pck"])
    row.update(part_discrimination=cells["part_discrimination"], contrast_pck=cells["contrast_pck"],
               contrast_discrimination=cells["contrast_discrimination"])
    at_tnr = result.get("table2_at_paper_tnr") or {}
    row["recall_at_paper_tnr"] = at_tnr.get("method", {}).get("recall")
    invisible = (result.get("image_specificity") or {}).get("invisible_parts", {})
    row["invisible_share"] = invisible.get("method", {}).get("invisible_share")
    if "truth" in result:
        row.update({k: result["truth"][k] for k in ("precision_at_k", "contrast_names_differing_attribute")})
    if "sentences" in result:
        row["sentences"] = {k: v for k, v in result["sentences"].items() if k != "examples"}
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
