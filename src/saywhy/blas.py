"""How numpy's BLAS threads are used: one thread for the small products of an explanation, and
independent fits run side by side on the cores (one BLAS thread each).

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
import os
import threading
from collections.abc import Callable, Iterator, Sequence
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


_SIDE_BY_SIDE = 0  # side-by-side sections running in this process: one inside another runs as a loop
_SIDE_BY_SIDE_LOCK = threading.Lock()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def side_by_side(function: Callable[[Any], Any], items: Sequence[Any], workers: int | None = None) -> list:
    """``[function(item) for item in items]``, run on up to ``workers`` threads (default: the usable cores),
    numpy's BLAS on one thread meanwhile so that the threads never outnumber the cores; results in the
    items' order, the first error raised. For independent fits (an evidence fit's blocks, its part
    groups, the part maps beside the evidence): each item is computed on one BLAS thread however many
    run at once, so its numbers are the same alone or beside others (OpenBLAS's threads round sums
    differently, and L-BFGS carries that to 1e-5 of the weights; tests/test_fit_side_by_side.py). The
    BLAS setting and the nesting count are the process's: a second fit, or an explanation, on another
    thread of the same process meanwhile runs its parts as a loop and may change BLAS's threads under
    it (the same optimum, other rounding). One worker or one item: the loop, on one BLAS thread; a call
    inside another side-by-side section: the loop."""
    global _SIDE_BY_SIDE
    items = list(items)
    workers = min(len(items), usable_cores() if workers is None else int(workers))
    with _SIDE_BY_SIDE_LOCK:
        nested = _SIDE_BY_SIDE > 0
        if workers > 1 and not nested:
            _SIDE_BY_SIDE += 1
    if nested:  # BLAS is on one thread already
        return [function(item) for item in items]
    if workers <= 1:
        with one_blas_thread():
            return [function(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor  # here: an explanation never needs it

    try:
        with one_blas_thread(), ThreadPoolExecutor(workers, thread_name_prefix="saywhy-fit") as pool:
            return list(pool.map(function, items))
    finally:
        with _SIDE_BY_SIDE_LOCK:
            _SIDE_BY_SIDE -= 1


class Beside:
    """``function()`` on a background thread beside the caller's own work (say, the forward passes on
    the cores torch leaves free), numpy's BLAS on one thread from :meth:`start` until the thread ends,
    and counted as a side-by-side section meanwhile (a :func:`side_by_side` inside it runs as a loop).
    The thread runs at the lowest scheduling priority (Linux), so that the caller's threads (the
    forward passes and the decoding) keep their speed and it takes the idle time. :meth:`result`
    waits for it and returns its value or raises its error."""

    def __init__(self, function: Callable[[], Any]):
        self.function = function
        self._thread: threading.Thread | None = None
        self._outcome: tuple[bool, Any] = (False, None)
        self._blas: Any = None

    def start(self) -> Beside:
        global _SIDE_BY_SIDE

        def run() -> None:
            try:
                try:  # the lowest priority: it takes only what the caller's threads leave
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread (Linux)
                except (AttributeError, OSError):
                    pass
                self._outcome = (True, self.function())
            except BaseException as error:  # noqa: BLE001 - raised in the caller by result()
                self._outcome = (False, error)
            finally:  # the thread gives BLAS back itself: also when the caller stopped waiting (Ctrl-C)
                self._release()

        with _SIDE_BY_SIDE_LOCK:
            _SIDE_BY_SIDE += 1
        self._blas = one_blas_thread()
        self._blas.__enter__()
        self._thread = threading.Thread(target=run, name="saywhy-beside", daemon=True)
        self._thread.start()
        return self

    def _release(self) -> None:
        """BLAS's threads and the side-by-side count given back, once."""
        global _SIDE_BY_SIDE
        with _SIDE_BY_SIDE_LOCK:
            if self._blas is None:
                return
            blas, self._blas = self._blas, None
            _SIDE_BY_SIDE -= 1
        blas.__exit__(None, None, None)

    def wait(self) -> None:
        """Wait for the thread (which gives BLAS its threads back as it ends)."""
        if self._thread is None:
            raise RuntimeError("Beside.wait() before start()")
        self._thread.join()  # it released BLAS and the count as it ended

    def result(self) -> Any:
        self.wait()
        done, value = self._outcome
        if not done:
            raise value
        return value
