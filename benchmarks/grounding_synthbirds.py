"""Table 1 on synthbirds: PCK of attribute grounding (eq. 9) against its baselines.

Uses the demo (synthbirds test images, the small CNN, the fitted explainer; built and
cached on first use) and prints one markdown row per method and attribute source:
"truth" (each image's true attributes, canonical words) and "captions" (attributes
parsed from its captions, as in the paper; spellings merged with the generator's
synonyms so that "gray bill" and "grey beak" are one attribute).

Run:  .venv/bin/python benchmarks/grounding_synthbirds.py [--home DIR] [--source truth captions] [--input-size N]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from saywhy.apps.grounding import grounding_pck
from saywhy.data.images import Preprocess
from saywhy.demo import ensure_demo
from saywhy.pipeline import ExplainerSession, image_documents
from saywhy.text.phrases import PhraseExtractor
from saywhy.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="workspace (default $SAYWHY_HOME or ./.saywhy)")
    parser.add_argument("--source", nargs="+", choices=["truth", "captions"], default=["truth", "captions"])
    parser.add_argument("--input-size", type=int, help="run the CNN at this input size instead of its own (64 px): "
                        "finer maps, but not the network the explainer was fitted on")
    parser.add_argument("--no-synonyms", action="store_true",
                        help="caption attributes as written ('gray bill' and 'grey beak' apart), as in the paper; "
                        "true attributes always use the generator's canonical words")
    parser.add_argument("--n-attributes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    workspace = Workspace(args.home) if args.home else Workspace.default()
    started = time.perf_counter()
    art = ensure_demo(workspace, progress=False)
    preprocess = Preprocess.from_dict(art.model_meta["preprocess"])
    if args.input_size:
        preprocess = dataclasses.replace(preprocess, image_size=args.input_size)
    session = ExplainerSession(art.explainer, art.model, preprocess)
    test = art.dataset.split(train=False)
    # The generator's synonyms miss the lemma "foot" of "feet"; captions are lemmatized.
    synonyms = {**art.truth["synonyms"], "foot": "leg"}
    out = {}
    print("| source | method | PCK@0.1 | PCK@0.2 | PCK@0.3 | pairs |")
    print("| --- | --- | --- | --- | --- | --- |")
    for source in args.source:
        if source == "truth":
            documents = [art.truth["images"][r.image_id]["attributes"] for r in test]
        else:
            extractor = PhraseExtractor(cache_dir=workspace.phrase_cache, progress=False)
            documents = image_documents(test, "captions", extractor)
        table = grounding_pck(session, test, documents, n_attributes=args.n_attributes,
                              synonyms=None if args.no_synonyms and source == "captions" else synonyms,
                              seed=args.seed)
        for method, result in table.results.items():  # every registered grounding method
            cells = " | ".join(f"{100 * v:.1f}%" for v in result.pck.values())
            print(f"| {source} | {method} | {cells} | {result.scored} |")
        out[source] = table.to_dict()
        first = next(iter(table.results.values()))
        print(f"<!-- {source}: {len(table.attributes)} attributes; skipped pairs {dict(first.skipped)}; "
              f"skipped images {table.skipped_images} -->")
    print(f"<!-- {time.perf_counter() - started:.1f} s, input {preprocess.image_size} px -->")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
