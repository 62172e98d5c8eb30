"""How numpy's BLAS threads are used: one thread for the small products of an explanation, and
independent fits run side by side on the cores (one BLAS thread each).

An explanation's scores and heatmaps are products of a few rows by the explainer's weights
(1 x 1,280 by 1,280 x 1,094 for a cub50 image; 5 x 1,280 by 1,280 x 49 for five heatmaps).
OpenBLAS splits them over its threads, whose busy-waiting after such short work costs more CPU
than the product itself: on EfficientNet-Lite0 at batch 1, five heatmaps cost 4.5 ms of CPU
with 2 OpenBLAS threads and 0.44 ms with one (BENCHMARKS.md, stop 17). :func:`one_blas_thread`
limits numpy's BLAS for a block (a few microseconds to enter and leave: threadpoolctl finds the
libraries once, and again, 3.5 ms, after imports have added modules); torch's own thread pool is left alone.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

_BLAS: list[Any] | None = None  # the loaded BLAS libraries (threadpoolctl controllers), found again after imports
_BLAS_LOCK = threading.Lock()
_BLAS_HOLDERS = 0  # one_blas_thread sections open now, in every thread of the process
_BLAS_SAVED: list[int] = []  # each library's thread count when the first of them opened
_BLAS_MODULES = 0  # len(sys.modules) when the libraries were found
_BLAS_PENDING = False  # the last section closed on a thread whose setting OpenBLAS ignored: not restored yet


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with numpy's BLAS on one thread, then restore what it was.

    The setting is the process's, so the sections of all threads are counted together: the first to
    open sets one thread, the last to close restores the counts the first found. A section that
    closes while another thread's is open changes nothing under it (an explanation served on a web
    app's thread beside a fit leaves the fit's products on one thread, so its numbers stay those of
    a fit alone). OpenBLAS 0.3.31 ignores a thread count set on another thread once the main thread
    has set one: a restore that did not take is retried at the next close, and by
    :meth:`Beside.wait` on the caller's thread (:func:`restore_blas`); and a section first opened on
    another thread after that limits nothing (a web app's worker threads keep BLAS's count)."""
    global _BLAS_HOLDERS, _BLAS_SAVED
    with _BLAS_LOCK:
        if _BLAS is None or _BLAS_MODULES != len(sys.modules):
            _find_blas()  # again after imports: SciPy's optimizers load a second OpenBLAS beside numpy's
        if _BLAS_HOLDERS == 0:
            # each library's count read and set directly: threadpoolctl's limit() context took 0.013 ms
            # warm, 0.08 ms after a forward pass had evicted it from the caches
            counts = [lib.get_num_threads() for lib in _BLAS]
            # a restore that did not take leaves the 1s it could not undo: the first's counts are kept, unless
            # the counts were changed since (by the user), which then count
            if not (_BLAS_PENDING and all(n == 1 or saved == 1 for n, saved in zip(counts, _BLAS_SAVED))):
                _BLAS_SAVED = counts
            for lib, threads in zip(_BLAS, _BLAS_SAVED):
                if threads != 1:
                    lib.set_num_threads(1)
        _BLAS_HOLDERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_HOLDERS -= 1
            _restore()


def _find_blas() -> None:
    """The BLAS libraries loaded now (threadpoolctl's controllers, 3.5 ms to find), and the count of
    imported modules they were found at: a library is loaded only by an import (under the lock)."""
    global _BLAS, _BLAS_MODULES
    from threadpoolctl import ThreadpoolController

    found = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    if _BLAS is not None and (_BLAS_PENDING or _BLAS_HOLDERS):  # counts still owed to the libraries found before
        known = {lib.filepath: threads for lib, threads in zip(_BLAS, _BLAS_SAVED)}
        saved = [known.get(lib.filepath, lib.get_num_threads()) for lib in found]
        if _BLAS_HOLDERS:  # a library loaded inside an open section (SciPy's, by a fit's import) is limited too
            for lib, threads in zip(found, saved):
                if lib.filepath not in known and threads != 1:
                    lib.set_num_threads(1)
        _BLAS_SAVED[:] = saved
    _BLAS, _BLAS_MODULES = found, len(sys.modules)


def _restore() -> None:
    """With no section open, the saved counts set again, and whether that took remembered (under the lock)."""
    global _BLAS_PENDING
    if _BLAS_HOLDERS or _BLAS is None:
        return
    for lib, threads in zip(_BLAS, _BLAS_SAVED):
        if threads != 1:
            lib.set_num_threads(threads)
    # read back only off the main thread, where OpenBLAS may have ignored it (a read costs a microsecond)
    _BLAS_PENDING = threading.current_thread() is not threading.main_thread() and \
        any(lib.get_num_threads() != threads for lib, threads in zip(_BLAS, _BLAS_SAVED))


def restore_blas() -> None:
    """Give BLAS back the thread counts a section on another thread could not restore (see
    :func:`one_blas_thread`); nothing while a section is open or when nothing is pending."""
    with _BLAS_LOCK:
        if _BLAS_PENDING:
            _restore()


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
    nesting count is the process's: a second fit on another thread of the same process meanwhile runs
    its parts as a loop (on one BLAS thread: the same numbers, later). One worker or one item: the
    loop, on one BLAS thread; a call inside another side-by-side section: the loop."""
    global _SIDE_BY_SIDE
    items = list(items)
    workers = min(len(items), usable_cores() if workers is None else int(workers))
    with _SIDE_BY_SIDE_LOCK:
        nested = _SIDE_BY_SIDE > 0
        if workers > 1 and not nested:
            _SIDE_BY_SIDE += 1
    if nested or workers <= 1:  # the loop, in a section of its own (a nesting thread's: the other's may close first)
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
        restore_blas()  # on this thread, where OpenBLAS takes the setting the thread's release could not

    def result(self) -> Any:
        self.wait()
        done, value = self._outcome
        if not done:
            raise value
        return value
