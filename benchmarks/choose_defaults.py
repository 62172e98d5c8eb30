"""Choose saywhy's figure-picked defaults on a validation split of the TRAINING images only.

For each dataset (an explainer folder: its metadata names the dataset and the checkpoint),
the captioned training images are split, per class and seeded, into a fitting part (75%)
and a validation part (25%); the test split is never read. Each candidate value is fitted
on the fitting part and scored on the validation part, everything else at its default:

- ``grounding`` (signed / positive / part) and the grounding method (eq. 9 with the
  explainer's alpha, or the part-contrasted alpha of ``apps/grounding.py``), and the input
  scale for grounding (1.0 / 1.5): PCK@0.1/0.2/0.3 (their mean decides) and the part
  discrimination rate against CUB keypoints, on the validation images' caption attributes;
- ``evidence_l2`` (1e-4 / 1e-3 / 1e-2): retrieval mAP of the validation captions' 50 most
  frequent attributes (Table 2's ranking);
- ``top_fraction`` (0.05 / 0.1 / 0.2, the p(t|f) model's "top" sigma): the same mAP with
  ``attribute_model="cooccurrence"``.

Writes benchmarks/results/choose_defaults.json: per dataset and setting, every candidate's
figures and the winner; BENCHMARKS.md says which defaults came from it.

Run:  SAYWHY_HOME=/work/bench_home .venv/bin/python benchmarks/choose_defaults.py \\
          --dataset cub50=/work/bench/exp --dataset synthbirds=/work/bench_home/explainers/synthbirds-2fb845855c72
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

CANDIDATES = {
    "grounding": ("signed", "positive", "part"),
    "evidence_l2": (1e-4, 1e-3, 1e-2),
    "top_fraction": (0.05, 0.1, 0.2),
}
GROUNDING_METHODS = ("proposed", "part_contrast")
GROUNDING_SCALES = (1.0, 1.5)


def validation_dataset(dataset, share: float = 0.25, seed: int = 0):
    """The captioned training images only, a seeded ``share`` of each class marked as the test split."""
    rng = np.random.default_rng(seed)
    train = dataset.with_captions(dataset.split(train=True))
    by_class: dict[int, list] = {}
    for record in train:
        by_class.setdefault(record.class_id, []).append(record)
    records = []
    for class_id in sorted(by_class):
        group = by_class[class_id]
        held = set(rng.choice(len(group), max(1, int(round(share * len(group)))), replace=False).tolist()) \
            if len(group) > 1 else set()
        records += [dataclasses.replace(r, is_train=i not in held) for i, r in enumerate(group)]
    return dataclasses.replace(dataset, records=records)


def mean_pck(table: dict, method: str) -> float:
    return float(np.mean(list(table["results"][method]["pck"].values())))


def run_dataset(name: str, explainer_dir: Path, workspace, seed: int) -> dict:
    from saywhy.apps.grounding import grounding_pck
    from saywhy.apps.retrieval import evaluate_attribute_retrieval
    from saywhy.data.cub import read_cub
    from saywhy.data.images import Preprocess
    from saywhy.data.synthbirds import load_truth
    from saywhy.explain.explainer import Explainer, ExplainerConfig
    from saywhy.model.checkpoint import load_checkpoint
    from saywhy.model.feature_cache import FeatureCache
    from saywhy.pipeline import ExplainerSession, fit_explainer
    from saywhy.text.phrases import PhraseExtractor

    started = time.perf_counter()
    meta = Explainer.load(explainer_dir).metadata_
    dataset = validation_dataset(read_cub(meta["dataset_root"]), seed=seed)
    truth_file = Path(meta["dataset_root"]).parent / "synthbirds_truth.json"
    synonyms = load_truth(truth_file.parent).get("synonyms") if truth_file.is_file() else None
    model, _ = load_checkpoint(meta["checkpoint"])
    preprocess = Preprocess.from_dict(meta["preprocess"])
    cache = FeatureCache(workspace.feature_cache)
    extractor = PhraseExtractor(cache_dir=workspace.phrase_cache, progress=False)
    validation = dataset.split(train=False)
    documents = extractor.extract_documents([list(r.captions) for r in validation])
    memo: dict = {}

    def fitted(**changes):
        config = ExplainerConfig(**changes)
        explainer, _ = fit_explainer(dataset, model, preprocess, config, extractor=extractor, progress=False,
                                     feature_cache=cache)
        return ExplainerSession(explainer, model, preprocess, cache, memo)

    def grounding(session, scale=1.0, methods=GROUNDING_METHODS):
        if scale != 1.0:
            session = ExplainerSession(session.explainer, model,
                                       dataclasses.replace(preprocess, image_size=int(round(scale * preprocess.image_size))))
        table = grounding_pck(session, validation, documents, synonyms=synonyms, seed=seed, methods=methods).to_dict()
        return {m: {"pck": table["results"][m]["pck"], "mean_pck": mean_pck(table, m),
                    "part_discrimination": table["part_discrimination"][m]["rate"]} for m in methods}

    def retrieval_map(session):
        pooled = session.activations(validation, strict=False).pooled
        return evaluate_attribute_retrieval(session.explainer, pooled, documents, seed=seed).report.method.macro[
            "average_precision"]

    out: dict = {"explainer": str(explainer_dir), "fitting_images": len(dataset.split(train=True)),
                 "validation_images": len(validation), "settings": {}}
    settings = out["settings"]
    rows = {}
    for value in CANDIDATES["grounding"]:
        session = fitted(grounding=value)
        rows[value] = grounding(session)
        if value == ExplainerConfig().grounding:
            default_session = session
    settings["grounding"] = {"criterion": "mean PCK@0.1/0.2/0.3 of eq. 9 on the validation images",
                             "candidates": rows, "chosen": max(rows, key=lambda v: rows[v]["proposed"]["mean_pck"]),
                             "default": ExplainerConfig().grounding}
    methods = rows[ExplainerConfig().grounding]
    settings["grounding_method"] = {"criterion": "mean PCK@0.1/0.2/0.3, the default grounding",
                                    "candidates": methods, "chosen": max(methods, key=lambda m: methods[m]["mean_pck"]),
                                    "default": "proposed"}
    scales = {str(s): grounding(default_session, s, ("proposed",))["proposed"] for s in GROUNDING_SCALES}
    settings["grounding_scale"] = {"criterion": "mean PCK@0.1/0.2/0.3 of eq. 9, input x scale for grounding only",
                                   "candidates": scales, "chosen": max(scales, key=lambda s: scales[s]["mean_pck"]),
                                   "default": "1.0"}
    l2 = {str(v): {"retrieval_map": retrieval_map(fitted(evidence_l2=v))} for v in CANDIDATES["evidence_l2"]}
    settings["evidence_l2"] = {"criterion": "retrieval mAP of the validation captions' 50 most frequent attributes",
                               "candidates": l2, "chosen": max(l2, key=lambda v: l2[v]["retrieval_map"]),
                               "default": str(ExplainerConfig().evidence_l2)}
    top = {str(v): {"retrieval_map": retrieval_map(fitted(attribute_model="cooccurrence", top_fraction=v))}
           for v in CANDIDATES["top_fraction"]}
    settings["top_fraction"] = {"criterion": "retrieval mAP with the p(t|f) model", "candidates": top,
                                "chosen": max(top, key=lambda v: top[v]["retrieval_map"]),
                                "default": str(ExplainerConfig().top_fraction)}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main() -> None:
    from saywhy.workspace import Workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME=EXPLAINER_DIR",
                        help="a fitted explainer; its metadata names the dataset and checkpoint (repeatable)")
    parser.add_argument("--home", type=Path, help="workspace with the feature and phrase caches (default $SAYWHY_HOME)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/choose_defaults.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    workspace = Workspace(args.home) if args.home else Workspace.default()
    results = {}
    for spec in args.dataset:
        name, _, folder = spec.partition("=")
        results[name] = run_dataset(name, Path(folder), workspace, args.seed)
        for setting, row in results[name]["settings"].items():
            print(f"{name}: {setting}: chosen {row['chosen']} (default {row['default']})")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
