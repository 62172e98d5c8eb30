"""One BLAS thread for the small products of an explanation.

An explanation's scores and heatmaps are products of a few rows by the explainer's weights
(1 x 1,280 by 1,280 x 1,094 for a cub50 image; 5 x 1,280 by 1,280 x 49 for five heatmaps).
OpenBLAS splits them over its threads, whose busy-waiting after such short work costs more CPU
than the product itself: on EfficientNet-Lite0 at batch 1, five heatmaps cost 4.5 ms of CPU
with 2 OpenBLAS threads and 0.44 ms with one (BENCHMARKS.md, stop 17). :func:`one_blas_thread`
limits numpy's BLAS for a block (0.02 ms to enter and leave, through one threadpoolctl
controller per process); torch's own thread pool is left alone.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_CONTROLLER: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with numpy's BLAS on one thread, then restore what it was."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    with _CONTROLLER.limit(limits=1, user_api="blas"):
        yield
