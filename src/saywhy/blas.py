"""One BLAS thread for the small products of an explanation.

An explanation's scores and heatmaps are products of a few rows by the explainer's weights
(1 x 1,280 by 1,280 x 1,094 for a cub50 image; 5 x 1,280 by 1,280 x 49 for five heatmaps).
OpenBLAS splits them over its threads, whose busy-waiting after such short work costs more CPU
than the product itself: on EfficientNet-Lite0 at batch 1, five heatmaps cost 4.5 ms of CPU
with 2 OpenBLAS threads and 0.44 ms with one (BENCHMARKS.md, stop 17). :func:`one_blas_thread`
limits numpy's BLAS for a block (a few microseconds to enter and leave: threadpoolctl finds the
libraries once per process); torch's own thread pool is left alone.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_BLAS: list[Any] | None = None  # numpy's BLAS libraries (threadpoolctl controllers), found once per process


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with numpy's BLAS on one thread, then restore what it was."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    # each library's count read and set directly: threadpoolctl's limit() context took 0.013 ms warm,
    # 0.08 ms after a forward pass had evicted it from the caches
    before = [lib.get_num_threads() for lib in _BLAS]
    for lib, threads in zip(_BLAS, before):
        if threads != 1:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, threads in zip(_BLAS, before):
            if threads != 1:
                lib.set_num_threads(threads)


def one_blas_thread_call(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` run under :func:`one_blas_thread` at every call: an explainer's rows made from the
    maps (part pools and peaks) are (groups x cells) by (cells x filters) products per image, which
    took 6 ms instead of 0.09 ms at batch 1 with OpenBLAS's second thread on a busy machine."""
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        with one_blas_thread():
            return function(*args, **kwargs)
    return run
