"""How far can caption-attribute retrieval go on cub50? Rankings up to an oracle, same images.

Table 2's ground truth is "the attribute is among the phrases parsed from the image's
captions". Captions are written by different people who name different things, so even
a ranking that knows each test image's true class cannot be perfect. This script
measures, on the same captioned test images and the same 50 most frequent attributes as
``saywhy evaluate``:

- mAP of several rankings, from text-only to an oracle that knows the true class;
- for each ranking, the best macro recall any set decision could reach at a true
  negative rate of at least 93% (per attribute, the largest recall over all thresholds of
  that ranking whose TNR is >= 0.93; not limited to the top-5 of a sentence).

Run (after 'saywhy train' filled the workspace's feature cache):
  .venv/bin/python benchmarks/cub50_retrieval_bounds.py --root ../shared/data/cub50 \
      --home HOME --checkpoint HOME/lite0_bbox
Writes benchmarks/results/cub50_retrieval_bounds.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from saywhy.apps.retrieval import frequent_attributes, score_retrieval
from saywhy.apps.text_baselines import class_attribute_frequency
from saywhy.core.attribute_evidence import fit_attribute_evidence
from saywhy.data.cub import read_cub
from saywhy.model.checkpoint import checkpoint_preprocess, load_checkpoint
from saywhy.model.feature_cache import FeatureCache
from saywhy.pipeline import head_parameters, pooled_activations, resolve_layers
from saywhy.text.phrases import PhraseExtractor
from saywhy.text.vocabulary import AttributeVocabulary
from saywhy.workspace import Workspace

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "cub50_retrieval_bounds.json"


def best_recall_at_tnr(scores: np.ndarray, relevant: np.ndarray, tnr: float = 0.93) -> float:
    """Macro over attributes of the largest recall of any threshold on ``scores`` with TNR >= ``tnr``."""
    recalls = []
    for j in range(relevant.shape[1]):
        order = np.argsort(-scores[:, j], kind="stable")
        hits = relevant[order, j]
        true_pos, false_pos = np.cumsum(hits), np.cumsum(~hits)
        allowed = false_pos <= (1 - tnr) * (~hits).sum()
        recalls.append(true_pos[allowed].max() / max(1, hits.sum()) if allowed.any() else 0.0)
    return float(np.mean(recalls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--min-df", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    workspace = Workspace(args.home)
    dataset = read_cub(args.root)
    model, meta = load_checkpoint(args.checkpoint)
    preprocess = checkpoint_preprocess(meta)
    layers = resolve_layers(model, preprocess)
    cache = FeatureCache(workspace.feature_cache)
    extractor = PhraseExtractor(cache_dir=workspace.phrase_cache)
    weights, bias = head_parameters(model, layers)

    def split(train: bool):
        records = dataset.with_captions(dataset.split(train=train))
        acts = pooled_activations(model, records, preprocess, layers, cache)
        kept = [records[i] for i in acts.index]
        documents = extractor.extract_documents([list(r.captions) for r in kept])
        labels = np.array([dataset.class_index(r.class_id) for r in kept])
        return acts.pooled.astype(np.float64), documents, labels

    train_x, train_docs, train_y = split(True)
    test_x, test_docs, test_y = split(False)
    vocabulary = AttributeVocabulary(min_df=args.min_df).fit(train_docs)
    terms = vocabulary.terms_
    frequency = class_attribute_frequency(train_docs, train_y, terms, weights.shape[0])
    logits = test_x @ weights.T + bias
    predicted = logits.argmax(axis=1)
    class_prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    class_prob /= class_prob.sum(axis=1, keepdims=True)
    evidence = fit_attribute_evidence(train_x, vocabulary.transform(train_docs))
    rankings = {
        "class caption frequency, predicted class (text only)": frequency[predicted],
        "class caption frequency, weighted by p(c|x)": class_prob @ frequency,
        "evidence model p(t|x) (image only)": evidence.probability(test_x),
        "oracle: class caption frequency of the TRUE class": frequency[test_y],
    }
    attributes = frequent_attributes(test_docs, 50, terms)
    columns = [terms.index(t) for t in attributes]
    relevant = np.array([[t in set(d) for t in attributes] for d in test_docs], dtype=bool)
    rows = {}
    for name, scores in rankings.items():
        macro = score_retrieval(scores, terms, test_docs).report.to_dict()["method"]["macro"]
        rows[name] = {"mAP": macro["average_precision"], "top5_recall": macro["recall"],
                      "top5_tnr": macro["true_negative_rate"],
                      "best_recall_at_tnr_0.93": best_recall_at_tnr(scores[:, columns], relevant)}
    result = {"command": "benchmarks/cub50_retrieval_bounds.py", "test_images_with_captions": len(test_docs),
              "attributes": attributes, "accuracy": float((predicted == test_y).mean()), "rankings": rows,
              "seconds": round(time.perf_counter() - started, 1)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print("| ranking | mAP | recall (top-5 set) | TNR (top-5 set) | best recall at TNR >= 93% |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {100 * r['mAP']:.1f} | {100 * r['top5_recall']:.1f} | {100 * r['top5_tnr']:.1f} | "
              f"{100 * r['best_recall_at_tnr_0.93']:.1f} |")
    print(f"wrote {OUT} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
