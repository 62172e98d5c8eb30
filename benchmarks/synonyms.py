"""Which synonyms does saywhy find in a dataset's training captions, and which pairs does it refuse?

For each dataset (a CUB-layout folder with captions), on its training images only:
the groups :func:`saywhy.text.synonyms.learn_synonyms` finds, the tests of every pair in
them, and the pairs that came closest without passing (the candidates a false merge would
come from: parts of one bird such as "head"/"beak", neighbours such as "eye"/"eyering",
antonyms such as "long"/"short"). With synthbirds, the generator's own synonyms
(``synthbirds_truth.json`` beside the images) score precision and recall.

Run (captions are read from the workspace's phrase cache, parsed once):
  .venv/bin/python benchmarks/synonyms.py --home HOME --dataset cub50=../shared/data/cub50 \
      --dataset synthbirds=HOME/data/synthbirds-...
Writes benchmarks/results/synonyms.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from saywhy.data.cub import read_cub
from saywhy.pipeline import caption_phrases
from saywhy.text.phrases import PhraseExtractor
from saywhy.text.surface import _IRREGULAR_PLURALS, plural_candidates
from saywhy.text.synonyms import MAX_WITHIN, MIN_AGREEMENT, MIN_PAIRS, learn_synonyms, pair_evidence
from saywhy.workspace import Workspace


def truth_groups(root: Path) -> list[list[str]] | None:
    path = root.parent / "synthbirds_truth.json" if root.name == "CUB_200_2011" else root / "synthbirds_truth.json"
    if not path.is_file():
        return None
    words = json.loads(path.read_text()).get("synonyms", {})
    groups: dict[str, list[str]] = {}
    for word, canonical in words.items():
        groups.setdefault(canonical, []).append(word)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def measure(root: Path, extractor: PhraseExtractor, n_near: int = 12) -> dict:
    dataset = read_cub(root)
    train = dataset.with_captions(dataset.split(train=True))
    started = time.perf_counter()
    images = caption_phrases(train, extractor)
    groups = learn_synonyms(images)
    seconds = time.perf_counter() - started
    out: dict = {"root": str(root), "training_images": len(train), "groups": groups.groups, "seconds": round(seconds, 2)}
    near = {}
    for role in ("noun", "adjective"):
        evidence, _ = pair_evidence(images, role)
        judged = [(pair, e) for pair, e in evidence.items() if e.pairs >= MIN_PAIRS]
        merged = [(p, e) for p, e in judged if groups.same(*p)]
        refused = sorted((x for x in judged if not groups.same(*x[0])),
                         key=lambda x: -(min(x[1].agreement, 1.5) * (1 - min(x[1].within, 1)) * (1 - min(x[1].word_within, 1))))
        near[role] = {"merged": [_row(p, e) for p, e in merged], "closest_refused": [_row(p, e) for p, e in refused[:n_near]]}
    out["pairs"] = near
    truth = truth_groups(root)
    if truth is not None:
        # The parser lemmatizes nouns: "wings"/"wing" and "feet"/"foot" are one word already.
        lemma_groups = [g for g in (sorted({_lemma(w) for w in group}) for group in truth) if len(g) > 1]
        truth_pairs = {(a, b) for g in lemma_groups for a in g for b in g if a < b}
        found_pairs = {(a, b) for g in groups.groups for a in g for b in g if a < b}
        out["truth"] = {"groups": lemma_groups, "pairs": len(truth_pairs), "found_pairs": len(found_pairs),
                        "precision": len(found_pairs & truth_pairs) / max(1, len(found_pairs)),
                        "recall": len(found_pairs & truth_pairs) / max(1, len(truth_pairs)),
                        "false_pairs": sorted(found_pairs - truth_pairs),
                        "missed_pairs": sorted(truth_pairs - found_pairs)}
    return out


def _lemma(word: str) -> str:
    """The singular of a plural the generator writes ("legs", "feet", "eyebrows")."""
    irregular = {plural: singular for singular, plural in _IRREGULAR_PLURALS.items()}
    if word in irregular:
        return irregular[word]
    for singular in (word[:-1], word[:-2], word[:-3] + "y"):
        if singular and word in plural_candidates(singular):
            return singular
    return word


def _row(pair, e) -> dict:
    return {"pair": list(pair), "within": round(e.within, 3), "word_within": round(e.word_within, 3),
            "agreement": round(e.agreement, 3), "pairs": e.pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME=ROOT")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synonyms.json")
    args = parser.parse_args()
    extractor = PhraseExtractor(cache_dir=Workspace(args.home).phrase_cache)
    results = {"thresholds": {"min_pairs": MIN_PAIRS, "max_within": MAX_WITHIN, "min_agreement": MIN_AGREEMENT}}
    for spec in args.dataset:
        name, _, root = spec.partition("=")
        results[name] = measure(Path(root), extractor)
        print(name, json.dumps(results[name]["groups"]), json.dumps(results[name].get("truth", {})))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
