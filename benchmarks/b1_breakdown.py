"""Benchmark: where an EfficientNet-Lite0 batch-1 explanation's cost beside the forward pass goes (issue 13).

Each part is timed right after a bare ``torch.inference_mode()`` forward of the same image, as
``speed.py``'s ratios are (the forward evicts what the part reads from the caches), and also
back to back (warm), 1 torch thread, CPU time, medians over interleaved repetitions:

* ``explain``: ``ExplainerSession.explain(x)`` from a tensor, over the bare forward (a ratio);
* ``forward_kept_maps``: ``extract_activations(..., keep_maps=True)`` (hooks, pooled vector, kept
  maps), over the bare forward (a ratio);
* ``map_rows_ms``: phi(x)'s part pools and peaks from the kept maps (``Explainer.map_activations``);
* ``explainer_ms``: ``Explainer.explain`` on the finished row (ranking, located evidence, sentence);
* ``ranking_weights_mb``: the float32 weights the ranking reads for every image.

Needs the cub50 checkpoint and default explainer (``saywhy train``/``saywhy fit`` as in BENCHMARKS.md). Run:
    PYTHONPATH=src .venv/bin/python benchmarks/b1_breakdown.py --checkpoint CKPT --explainer EXP [--reps 30]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CUB = Path(os.environ.get("SAYWHY_CUB50", HERE.parent.parent / "shared" / "data" / "cub50"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--explainer", required=True)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--json", default=str(HERE / "results" / "speed_b1_breakdown.json"))
    args = parser.parse_args()

    import torch

    from saywhy.blas import one_blas_thread
    from saywhy.data.images import ImageDataset
    from saywhy.explain.explainer import Explainer
    from saywhy.model.activations import extract_activations
    from saywhy.model.checkpoint import load_checkpoint
    from saywhy.pipeline import ExplainerSession

    torch.set_num_threads(1)
    explainer = Explainer.load(args.explainer)
    model, _ = load_checkpoint(args.checkpoint)
    session = ExplainerSession(explainer, model)
    image = sorted(glob.glob(str(CUB / "CUB_200_2011" / "images" / "*" / "*.jpg")))[0]
    x = ImageDataset([image], session.preprocess)[0][0][None].contiguous()
    acts = session.activations(x, keep_maps=True)

    def bare():
        with torch.inference_mode():
            model(x)

    def explainer_only():
        with one_blas_thread():
            explainer.explain(acts.pooled, None)

    def map_rows():
        with one_blas_thread():
            explainer.map_activations(acts.maps, acts.pooled)

    parts = {"explain": lambda: session.explain(x),
             "forward_kept_maps": lambda: extract_activations(session.model, x, session.preprocess, session.layers,
                                                              keep_maps=True, progress=False),
             "map_rows_ms": map_rows, "explainer_ms": explainer_only}
    ratios = {"explain", "forward_kept_maps"}
    for fn in parts.values():  # warm-up
        fn(), fn()
    after_forward: dict[str, list[float]] = {k: [] for k in parts}
    warm: dict[str, list[float]] = {k: [] for k in parts if k not in ratios}
    bare_ms: list[float] = []
    for _ in range(args.reps):
        for key, fn in parts.items():
            started = time.process_time()
            bare()
            base = time.process_time() - started
            started = time.process_time()
            fn()
            used = time.process_time() - started
            after_forward[key].append(used / base if key in ratios else 1000 * used)
            bare_ms.append(1000 * base)
            if key in warm:
                started = time.process_time()
                fn()
                warm[key].append(1000 * (time.process_time() - started))
    evidence = explainer.attribute_model_.evidence_
    on_phi, blocks = evidence._layout(True)
    result = {"image": Path(image).name, "repetitions": args.reps, "torch_threads": 1, "load_average": os.getloadavg()[0],
              "bare_forward_ms": round(statistics.median(bare_ms), 2),
              "after_a_forward": {k: round(statistics.median(v), 3) for k, v in after_forward.items()},
              "back_to_back": {k: round(statistics.median(v), 3) for k, v in warm.items()},
              "ranking_weights_mb": round((on_phi.nbytes + sum(b.nbytes for _, _, b in blocks)) / 1e6, 2),
              "part_attributes": int((evidence.sources >= 0).sum()) if evidence.sources is not None else 0,
              "attributes": int(len(evidence.bias))}
    print(json.dumps(result, indent=1))
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
