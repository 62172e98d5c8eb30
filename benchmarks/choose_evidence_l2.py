"""Choose the evidence model's L2 penalty on a validation split of the TRAINING images.

Each attribute's problem is its mean cross-entropy over the images plus l2 / 2 ||a_t||^2
(issue 13; before, the loss was divided by images x attributes, so the penalty an
attribute felt grew with the vocabulary: 1e-3 x 233 = 0.23 on synthbirds, 1e-3 x 1,180 =
1.18 on cub50). For each dataset, 20% of the captioned training images (seeded) are held
out; the vocabulary and the models are fitted on the other 80%; each candidate is scored
by the held-out mean cross-entropy per (image, attribute) and the held-out precision@5 of
p(t|x) against the image's caption attributes. Test images are never read.

Run (features come from the workspace's cache):
  PYTHONPATH=src .venv/bin/python benchmarks/choose_evidence_l2.py --home /work/bench_home \
      --dataset synthbirds=HOME/data/synthbirds-.../CUB_200_2011:HOME/models/smallcnn-... \
      --dataset cub50=../shared/data/cub50:/work/bench/ckpt
Writes benchmarks/results/evidence_l2.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from saywhy.core.attribute_evidence import fit_attribute_evidence
from saywhy.data.cub import read_cub
from saywhy.model.checkpoint import checkpoint_preprocess, load_checkpoint
from saywhy.model.feature_cache import FeatureCache
from saywhy.pipeline import pooled_activations, resolve_layers
from saywhy.text.phrases import PhraseExtractor
from saywhy.text.vocabulary import AttributeVocabulary
from saywhy.workspace import Workspace

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "evidence_l2.json"
CANDIDATES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def training_split(root: Path, checkpoint: Path, workspace: Workspace, seed: int = 0):
    dataset = read_cub(root)
    model, meta = load_checkpoint(checkpoint)
    preprocess = checkpoint_preprocess(meta)
    layers = resolve_layers(model, preprocess)
    records = dataset.with_captions(dataset.split(train=True))
    acts = pooled_activations(model, records, preprocess, layers, FeatureCache(workspace.feature_cache))
    kept = [records[i] for i in acts.index]
    documents = PhraseExtractor(cache_dir=workspace.phrase_cache).extract_documents([list(r.captions) for r in kept])
    held = np.random.default_rng(seed).random(len(kept)) < 0.2
    x = acts.pooled.astype(np.float64)
    fit_docs = [d for d, h in zip(documents, held) if not h]
    val_docs = [d for d, h in zip(documents, held) if h]
    vocabulary = AttributeVocabulary(min_df=3).fit(fit_docs)
    incidence = lambda docs: (vocabulary.transform(docs) > 0).astype(np.float64)  # noqa: E731
    return x[~held], incidence(fit_docs), x[held], incidence(val_docs)


def score(model, x: np.ndarray, y: sp.csr_matrix) -> dict[str, float]:
    logits = model.logits(x)
    truth = y.toarray() > 0
    bce = np.logaddexp(0.0, logits) - truth * logits
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return {"cross_entropy": float(bce.mean()),
            "precision_at_5": float(np.take_along_axis(truth, top5, axis=1).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--dataset", action="append", required=True, help="NAME=ROOT:CHECKPOINT")
    parser.add_argument("--candidates", type=float, nargs="+", default=CANDIDATES)
    args = parser.parse_args()
    workspace = Workspace(args.home)
    # Runs add up: a dataset or a candidate measured by an earlier run is kept (shared machine, long fits).
    result: dict = json.loads(OUT.read_text()) if OUT.is_file() else {"command": "benchmarks/choose_evidence_l2.py",
                                                                      "datasets": {}}
    for spec in args.dataset:
        name, _, paths = spec.partition("=")
        root, _, checkpoint = paths.partition(":")
        fit_x, fit_y, val_x, val_y = training_split(Path(root), Path(checkpoint), workspace)
        rows = result["datasets"].get(name, {}).get("by_l2", {})
        for l2 in args.candidates:
            started, cpu = time.perf_counter(), time.process_time()
            model = fit_attribute_evidence(fit_x, fit_y, l2=l2)
            rows[str(l2)] = {**score(model, val_x, val_y), "fit_seconds": round(time.perf_counter() - started, 2),
                             "cpu_seconds": round(time.process_time() - cpu, 2)}
            print(name, l2, rows[str(l2)], flush=True)
        result["datasets"][name] = {"fit_images": len(fit_x), "validation_images": len(val_x),
                                    "attributes": fit_y.shape[1], "by_l2": rows}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=1) + "\n")
    # The choice: among the candidates measured on every dataset, the smallest held-out
    # cross-entropy relative to each dataset's best, averaged over the datasets.
    common = [c for c in CANDIDATES if all(str(c) in d["by_l2"] for d in result["datasets"].values())]

    def excess(l2: float) -> float:
        return float(np.mean([d["by_l2"][str(l2)]["cross_entropy"] / min(d["by_l2"][str(c)]["cross_entropy"] for c in common)
                              for d in result["datasets"].values()]))
    result["candidates_on_every_dataset"] = common
    result["chosen"] = min(common, key=lambda c: (excess(c), c))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"chosen l2 = {result['chosen']}; wrote {OUT}")


if __name__ == "__main__":
    main()
