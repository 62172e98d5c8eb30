"""Synonyms and sentences (issue 11, items 1-2): explainers compared on the same test images, no grounding.

For each explainer folder given (e.g. one fitted before synonym merging and one after), on
the dataset's test split with this checkout's code: accuracy, distinct attributes, Table 2
retrieval (caption phrases written with the explainer's synonym groups), Table 3 BLEU,
the text-only baselines, and the sentence checks of :mod:`saywhy.metrics.sentences`, both
with each explainer's own words and with the *last* explainer's surface forms and synonym
groups (so that sentences written before merging are judged by the same rules), plus the
same 20 seeded test sentences from each. Grounding (Table 1) is left out: it needs the
spatial maps, more memory than a shared machine may have (`saywhy evaluate` does it all).

Run:
  .venv/bin/python benchmarks/words.py --root ../shared/data/cub50 --home HOME \
      --explainer BEFORE --explainer AFTER --out benchmarks/results/words_cub50.json
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from saywhy.apps.retrieval import evaluate_attribute_retrieval
from saywhy.data.cub import read_cub
from saywhy.evaluate import parsed_split, sentence_quality, text_baselines
from saywhy.explain.explainer import Explainer
from saywhy.metrics.bleu import bleu_by_correctness
from saywhy.metrics.sentences import SentenceChecker
from saywhy.model.feature_cache import FeatureCache
from saywhy.pipeline import ExplainerSession
from saywhy.text.phrases import PhraseExtractor
from saywhy.workspace import Workspace


def measure(folder: Path, judge: Explainer, dataset, extractor, cache: FeatureCache, n_sample: int) -> dict:
    started = time.perf_counter()
    explainer = Explainer.load(folder)
    session = ExplainerSession.from_checkpoint(explainer, feature_cache=cache)
    kept, acts, documents = parsed_split(session, dataset.split(train=False), extractor)
    labels = np.array([dataset.class_index(r.class_id) for r in kept])
    predicted = explainer.predict(acts.pooled)
    correct = predicted == labels
    explanations = explainer.explain(acts.pooled)
    sentences, classes = [e.sentence for e in explanations], [e.class_index for e in explanations]
    used = Counter(a for e in explanations for a, _ in e.attributes)
    checker = SentenceChecker(list(explainer.vocabulary_) + list(judge.vocabulary_), judge.surface_forms_,
                              judge.synonyms_)
    captioned = [i for i, d in enumerate(documents) if d is not None]
    rng = np.random.default_rng(0)
    sample = sorted(rng.choice(len(captioned), min(n_sample, len(captioned)), replace=False))
    return {
        "vocabulary": len(explainer.vocabulary_), "synonyms": explainer.synonyms_.groups,
        "accuracy": float(correct.mean()), "distinct_attributes": len(used),
        "most_common": [(a, n / len(kept)) for a, n in used.most_common(5)],
        "retrieval": evaluate_attribute_retrieval(explainer, acts.pooled, documents, n_attributes=50, k=10,
                                                  seed=0).to_dict()["method"]["macro"],
        "bleu": bleu_by_correctness(sentences, [r.captions for r in kept], correct).to_dict()["means"]["overall"],
        "sentences_own_rules": sentence_quality(explainer, sentences, classes),
        "sentences_judged": checker.report([sentences[i] for i in captioned],
                                           [explanations[i].class_name for i in captioned]).to_dict(),
        "baselines": text_baselines(session, dataset, extractor, documents, kept, predicted, correct, 0),
        "sample": [sentences[captioned[i]] for i in sample],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--explainer", type=Path, action="append", required=True)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "words_cub50.json")
    args = parser.parse_args()
    workspace = Workspace(args.home)
    dataset = read_cub(args.root)
    extractor = PhraseExtractor(cache_dir=workspace.phrase_cache)
    judge = Explainer.load(args.explainer[-1])
    results = {str(f): measure(f, judge, dataset, extractor, FeatureCache(workspace.feature_cache), args.sample)
               for f in args.explainer}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    for folder, r in results.items():
        print(folder, json.dumps({k: r[k] for k in ("accuracy", "distinct_attributes", "bleu", "sentences_judged")})[:900])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
