"""Does the evidence fit stop too early? Recovery of planted filters at two stopping tolerances.

On ``fit_scale.synthetic`` data each attribute t adds one unit to filter ``t % F`` of the
images holding it, so the right answer is known: the attribute's largest weight should be on
that filter. The fit is run with the default stopping value and a stricter one; if the default
stopped early, the stricter one would recover more attributes. Prints, per band of attribute
frequency, the share recovered and the share whose weights are all zero.

Run:  PYTHONPATH=src .venv/bin/python benchmarks/evidence_recovery.py 6000 1280 1000 1e-3 1e-4
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_scale import synthetic  # noqa: E402

from saywhy.core import attribute_evidence as ae  # noqa: E402


def main() -> None:
    n, f, t = (int(v) for v in sys.argv[1:4])
    tolerances = [float(v) for v in sys.argv[4:]] or [ae.TOLERANCE, ae.TOLERANCE / 10]
    pooled, incidence = synthetic(n, f, t, seed=n + f + t)
    present = np.asarray(incidence.sum(axis=0)).ravel()
    planted = np.arange(t) % f
    chunks = ae.row_chunks(pooled, incidence)
    moments = ae.chunk_moments(chunks, f, t)
    with threadpool_limits(limits=1, user_api="blas"):
        for tolerance in tolerances:
            started = time.perf_counter()
            fitted = ae.fit_evidence_blocks(ae.EvidenceLoss(chunks, moments.mean, moments.std), moments,
                                            tolerance=tolerance)
            seconds = time.perf_counter() - started
            for lo, hi in ((1, 5), (5, 20), (20, 100), (100, None)):
                band = (present >= lo) & (present < (hi or np.inf))
                if band.any():
                    recovered = float((fitted.weights[band].argmax(axis=1) == planted[band]).mean())
                    zero = float((np.abs(fitted.weights[band]).max(axis=1) < 1e-8).mean())
                    print(f"tolerance {tolerance:g} ({seconds:.0f} s): attributes in [{lo}, {hi or 'inf'}) images: "
                          f"{band.sum()}, planted filter recovered {recovered:.3f}, all-zero {zero:.3f}")


if __name__ == "__main__":
    main()
