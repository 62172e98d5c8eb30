"""Fit time and peak memory at scale, on synthetic features (issue 13, item 6, the fit rows).

Each measurement runs in a fresh subprocess and reports its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), so cells never share memory.

- ``grid``: images x filters x attributes, for both attribute models. Features are
  Gamma(2) noise plus one unit on filter ``t % F`` for each attribute t the image holds;
  each image holds about 12 attributes drawn with Zipf(1.1) frequencies (a seeded
  generator, sparse incidence). ``evidence`` is ``fit_attribute_evidence`` (float32
  row chunks, blocks of ``BLOCK`` attributes, 10 L-BFGS corrections; each evidence row records its
  block width, and rows without one were measured at 1,024, before stop 21); ``cooccurrence`` is the
  paper's p(t|f) (``CooccurrenceModel``: exact top-10% thresholds, eq. 2 as a sparse
  product). A cell run with ``--max-iter`` (the 24,000 x 2,048 x 10,000 memory check uses 1) stops
  each block's L-BFGS after that many iterations: its peak memory is the full fit's (every buffer is allocated by then), its
  time is not, and it is reported per evaluation and marked ``capped``.
- ``stream``: an ImageNet-sized streamed fit: N images generated chunk by chunk (8,192
  rows, each chunk from its own seed, so every pass sees the same data), never held:
  the p(t|f) statistics (max + exact thresholds, then eq. 2 and the prior) and the
  evidence model's moments plus ``--evaluations`` loss-and-gradient evaluations of one
  block (what each L-BFGS step costs). Measured at several N to show time proportional
  to images.

Run:  PYTHONPATH=src .venv/bin/python benchmarks/fit_scale.py [--budget SECONDS]
Writes benchmarks/results/fit_scale.json (cells are added as they finish).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "fit_scale.json"
CHUNK = 8192


def synthetic(n: int, f: int, t: int, seed: int) -> tuple[np.ndarray, sp.csr_matrix]:
    """(n x f float32 features, n x t 0/1 CSR incidence), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    per_image = rng.poisson(12, size=n).clip(1, t)
    weights = 1.0 / np.arange(1, t + 1) ** 1.1
    weights /= weights.sum()
    cols = rng.choice(t, size=int(per_image.sum()), p=weights)
    rows = np.repeat(np.arange(n), per_image)
    incidence = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(n, t))
    incidence.sum_duplicates()
    incidence.data[:] = 1.0
    pooled = rng.gamma(2.0, size=(n, f)).astype(np.float32)
    hits = incidence.tocoo()
    np.add.at(pooled, (hits.row, hits.col % f), np.float32(1.0))
    return pooled, incidence


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def cpu_seconds() -> float:
    """This process's CPU time: on a shared, loaded machine the wall time says more about the others."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 2)


def run_cell(model: str, n: int, f: int, t: int, max_iter: int | None) -> dict:
    from threadpoolctl import threadpool_limits

    pooled, incidence = synthetic(n, f, t, seed=n + f + t)
    data_mb = peak_mb()
    started = time.perf_counter()
    evaluations = 0
    with threadpool_limits(limits=1, user_api="blas"):
        if model == "evidence":
            from saywhy.core import attribute_evidence as ae

            original = ae.EvidenceLoss.__call__

            def counted(self, *args):
                nonlocal evaluations
                evaluations += 1
                return original(self, *args)

            ae.EvidenceLoss.__call__ = counted
            ae.fit_attribute_evidence(pooled, incidence, max_iter=max_iter or 300)
        else:
            from saywhy.explain.attribute_models import CooccurrenceModel
            from saywhy.explain.explainer import ExplainerConfig

            CooccurrenceModel(ExplainerConfig(attribute_model="cooccurrence")).fit(pooled, incidence, incidence)
    seconds = time.perf_counter() - started
    row = {"model": model, "images": n, "filters": f, "attributes": t, "seconds": round(seconds, 2),
           "peak_mb": round(peak_mb(), 1), "data_mb": round(data_mb, 1), "incidence_nnz": int(incidence.nnz),
           "cpu_seconds_total": cpu_seconds()}
    if model == "evidence":
        from saywhy.core.attribute_evidence import BLOCK

        row.update(evaluations=evaluations, seconds_per_evaluation=round(seconds / max(evaluations, 1), 4),
                   capped=max_iter is not None, block=BLOCK)  # rows without "block" were measured with 1,024
    return row


def run_stream(n: int, f: int, t: int, evaluations: int) -> dict:
    from threadpoolctl import threadpool_limits

    from saywhy.core.attribute_evidence import BLOCK, EvidenceLoss, chunk_moments
    from saywhy.explain.attribute_models import CooccurrenceModel
    from saywhy.explain.explainer import ExplainerConfig

    def chunks():
        for i, start in enumerate(range(0, n, CHUNK)):
            yield synthetic(min(CHUNK, n - start), f, t, seed=1_000_000 + i)

    row: dict = {"images": n, "filters": f, "attributes": t, "chunk_rows": CHUNK, "block": min(t, BLOCK)}
    with threadpool_limits(limits=1, user_api="blas"):
        started = time.perf_counter()
        for _ in chunks():
            pass
        row["generate_seconds_per_pass"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        CooccurrenceModel(ExplainerConfig(attribute_model="cooccurrence")).fit_chunks(chunks, f, t, n)
        row["cooccurrence_seconds"] = round(time.perf_counter() - started, 2)  # 2 passes, generation included
        started = time.perf_counter()
        moments = chunk_moments(chunks, f, t)
        loss = EvidenceLoss(chunks, moments.mean, moments.std)
        block = min(t, BLOCK)  # one L-BFGS block's evaluation (stop 20 and before: 1024 wide)
        a, b = np.zeros((block, f)), np.zeros(block)
        row["evidence_moments_seconds"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        for _ in range(evaluations):
            loss(0, block, a, b)
        row["evidence_seconds_per_evaluation"] = round((time.perf_counter() - started) / max(evaluations, 1), 2)
    row["peak_mb"] = round(peak_mb(), 1)
    row["cpu_seconds_total"] = cpu_seconds()
    return row


def run_thresholds(n: int, f: int) -> dict:
    """The p(t|f) fit's top-10% thresholds: np.quantile (before issue 13) against TopValues (np.partition)."""
    from saywhy.core.filter_attribute import top_fraction_thresholds

    pooled = np.random.default_rng(0).gamma(2.0, size=(n, f)).astype(np.float32)
    times: dict[str, list[float]] = {"np.quantile": [], "TopValues": []}
    for _ in range(3):  # interleaved repetitions, medians
        started = time.perf_counter()
        np.quantile(np.asarray(pooled, np.float64), 0.9, axis=0)
        times["np.quantile"].append(time.perf_counter() - started)
        started = time.perf_counter()
        top_fraction_thresholds(pooled, 0.1)
        times["TopValues"].append(time.perf_counter() - started)
    return {"images": n, "filters": f, **{k: round(float(np.median(v)), 3) for k, v in times.items()}}


def subprocess_json(args: list[str], timeout: float) -> dict | None:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def save(result: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", nargs=4, metavar=("MODEL", "N", "F", "T"))
    parser.add_argument("--stream", nargs=3, type=int, metavar=("N", "F", "T"))
    parser.add_argument("--max-iter", type=int)
    parser.add_argument("--evaluations", type=int, default=2)
    parser.add_argument("--budget", type=float, default=900, help="seconds for the whole grid (cells past it are not run)")
    parser.add_argument("--only", choices=["grid", "stream", "big", "thresholds"], action="append")
    parser.add_argument("--stream-sizes", type=int, nargs="+", default=[40_960, 163_840, 655_360, 1_280_000])
    args = parser.parse_args()
    if args.cell:
        model, n, f, t = args.cell
        print(json.dumps(run_cell(model, int(n), int(f), int(t), args.max_iter)))
        return
    if args.stream:
        print(json.dumps(run_stream(*args.stream, args.evaluations)))
        return
    result = json.loads(OUT.read_text()) if OUT.is_file() else {}
    result.update(command="benchmarks/fit_scale.py", cpu=os.cpu_count(), threads=1,
                  load_average_at_start=os.getloadavg()[0])
    deadline = time.perf_counter() + args.budget
    only = args.only or ["grid", "big", "stream"]
    cells = result.setdefault("grid", {})
    if "grid" in only:
        for n in (1000, 6000, 24000):
            for f in (1280, 2048):
                for t in (1000, 10000):
                    for model in ("cooccurrence", "evidence"):
                        key = f"{model} {n}x{f}x{t}"
                        left = deadline - time.perf_counter()
                        if key in cells or left < 10:
                            continue
                        row = subprocess_json(["--cell", model, str(n), str(f), str(t)], timeout=left)
                        cells[key] = row or {"not_run": f"past the {args.budget:.0f} s budget on this machine"}
                        print(key, cells[key], flush=True)
                        save(result)
    if "big" in only:
        row = subprocess_json(["--cell", "evidence", "24000", "2048", "10000", "--max-iter", "1"], timeout=3000)
        result["evidence_24000x2048x10000_memory"] = row
        print("big", row, flush=True)
        save(result)
    if "thresholds" in only:
        result["thresholds_24000x2048"] = run_thresholds(24000, 2048)
        print("thresholds", result["thresholds_24000x2048"], flush=True)
        save(result)
    if "stream" in only:
        stream = result.setdefault("stream", {})
        for n in args.stream_sizes:
            row = subprocess_json(["--stream", str(n), "1280", "1000", "--evaluations", "1"], timeout=3000)
            stream[str(n)] = row or {"not_run": "timed out"}
            print("stream", n, stream[str(n)], flush=True)
            save(result)
    save(result)


if __name__ == "__main__":
    main()
