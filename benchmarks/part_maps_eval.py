"""The issue-11 goal figures that part maps can move, on a dataset's test split, for one explainer fitted
with part maps, with visibility gating off and on (the same fitted state), in one run.

What part maps cannot move is not recomputed: retrieval (Table 2 and the TNR-92.9 operating point) ranks by
log p(t|x,c), which gating leaves alone, so those figures are the plain explainer's (``saywhy evaluate``).
This script computes, with the functions ``saywhy evaluate`` calls:

- Table 1 (``apps.grounding.grounding_pck``): PCK@0.1/0.2/0.3 and the part discrimination rate of eq. 9
  (``proposed``), the part maps (``part_maps``, ``part_maps_alpha``), the constant p.d.f. and CAM, on the
  same (image, caption attribute) pairs;
- image-specificity (``evaluate.image_specificity``): the invisible-part share of cited part-attributes
  beside the class caption frequency baseline's and the own captions', and the occlusion share on a
  seeded sample of test images, for gating on (off: the invisible share only; its occlusion share is the
  plain explainer's, whose explanations it repeats exactly);
- the sentence checks (``evaluate.sentence_quality``) and distinct attributes, gating off and on.

Run:  SAYWHY_HOME=/work/bench_home nice -n 19 .venv/bin/python benchmarks/part_maps_eval.py \\
          --explainer /work/bench_home/partmaps/exp --root ../shared/data/cub50 --out benchmarks/results/cub50_part_maps.json
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

METHODS = ("proposed", "part_maps", "part_maps_alpha", "constant", "cam")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explainer", type=Path, required=True, help="an explainer fitted with part maps")
    parser.add_argument("--root", type=Path, help="the dataset (default: the explainer's)")
    parser.add_argument("--occlusion-images", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from saywhy.apps.grounding import grounding_pck
    from saywhy.data.cub import read_cub
    from saywhy.evaluate import image_specificity, parsed_split, sentence_quality
    from saywhy.explain.explainer import Explainer
    from saywhy.pipeline import ExplainerSession
    from saywhy.text.phrases import PhraseExtractor
    from saywhy.workspace import Workspace

    started = time.perf_counter()
    explainer = Explainer.load(args.explainer)
    if not explainer.has_part_maps:
        raise SystemExit(f"{args.explainer} has no part maps: fit it on a dataset with keypoints")
    dataset = read_cub(args.root or explainer.metadata_["dataset_root"])
    from saywhy.model.feature_cache import FeatureCache

    session = ExplainerSession.from_checkpoint(explainer, explainer.metadata_["checkpoint"],
                                               feature_cache=FeatureCache(Workspace.default().feature_cache))
    extractor = PhraseExtractor(cache_dir=Workspace.default().phrase_cache, progress=False)
    kept, acts, documents = parsed_split(session, dataset.split(train=False), extractor)
    out: dict = {"explainer": str(args.explainer), "dataset": str(dataset.root), "test_images": len(kept),
                 "part_maps": explainer.part_maps_settings_}
    table = grounding_pck(session, kept, documents, seed=args.seed, methods=METHODS).to_dict()
    out["table1"] = {m: {"pck": table["results"][m]["pck"], "pairs": table["results"][m]["scored"],
                         "part_discrimination": table["part_discrimination"][m]} for m in METHODS}
    out["table1_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({m: (r["pck"], r["part_discrimination"]["rate"]) for m, r in out["table1"].items()}), flush=True)
    predicted = explainer.predict(acts.pooled)
    for gate in (False, True):
        variant = copy.copy(explainer)  # the same fitted state, gating off or on (read at explain time only)
        variant.config = dataclasses.replace(explainer.config, part_visibility=gate)
        gated = ExplainerSession(variant, session.model, session.preprocess, session.feature_cache, session.map_memo)
        explanations = variant.explain(acts.pooled)
        t0 = time.perf_counter()
        # Gating off explains exactly as the explainer without part maps: its occlusion share is that of
        # ``saywhy evaluate`` on the plain explainer, so the occlusion test runs for gating on only.
        spec = image_specificity(gated, dataset, extractor, kept, documents, explanations, predicted, args.seed,
                                 args.occlusion_images if gate else 0)
        used = Counter(t for e in explanations for t, _ in e.attributes)
        out["gating_on" if gate else "gating_off"] = {
            "image_specificity": spec, "seconds": round(time.perf_counter() - t0, 1),
            "sentences": sentence_quality(variant, [e.sentence for e in explanations],
                                          [e.class_index for e in explanations]),
            "distinct_attributes": len(used), "examples": [e.sentence for e in explanations[:8]]}
        print(gate, json.dumps({k: v.get("invisible_share") for k, v in spec["invisible_parts"].items()}),
              json.dumps({k: v.get("own_part_drops_more") for k, v in spec.get("occlusion", {}).items()}), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    out["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
