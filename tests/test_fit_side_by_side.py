"""Independent fits side by side on the cores (saywhy.blas): the same numbers as one after the other.

A fit's evidence blocks, its part groups, and the part maps beside the forward passes are
independent computations; run on threads they must give what the loop gives, keep their order,
raise their errors, and never nest (a side-by-side call inside another runs as a loop).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.sparse as sp

from saywhy import blas
from saywhy.blas import Beside, one_blas_thread, side_by_side


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_side_by_side_keeps_the_order_raises_and_runs_a_nested_call_as_a_loop():
    before = _blas_threads()
    seen: list[tuple[int, str, list[int]]] = []

    def work(item: int) -> int:
        inner = side_by_side(lambda x: (x, threading.current_thread().name), [item, item + 1])
        seen.append((item, threading.current_thread().name, _blas_threads()))
        assert {name for _, name in inner} == {threading.current_thread().name}  # nested: a loop, same thread
        return item * 10

    assert side_by_side(work, [3, 1, 2], workers=2) == [30, 10, 20]
    assert {name for _, name, _ in seen} <= {"saywhy-fit_0", "saywhy-fit_1"} and len(seen) == 3
    assert all(set(threads) <= {1} for _, _, threads in seen)  # one BLAS thread each meanwhile
    assert _blas_threads() == before  # and BLAS as it was after
    with pytest.raises(ZeroDivisionError):
        side_by_side(lambda x: 1 / x, [1, 0, 2], workers=2)
    assert _blas_threads() == before and blas._SIDE_BY_SIDE == 0
    main = threading.current_thread().name
    assert side_by_side(lambda x: threading.current_thread().name, [1, 2], workers=1) == [main, main]


def test_beside_returns_its_value_or_raises_its_error_and_gives_blas_back():
    before = _blas_threads()
    running = Beside(lambda: (_blas_threads(), side_by_side(lambda x: threading.current_thread().name, [1, 2])))
    threads, names = running.start().result()
    assert set(threads) <= {1} and len(set(names)) == 1  # one BLAS thread; a side-by-side inside it is a loop
    assert _blas_threads() == before and blas._SIDE_BY_SIDE == 0
    failing = Beside(lambda: 1 / 0).start()
    with pytest.raises(ZeroDivisionError):
        failing.result()
    failing.wait()  # again: nothing
    assert _blas_threads() == before and blas._SIDE_BY_SIDE == 0


@pytest.mark.parametrize("smoothed", [False, True])
def test_evidence_blocks_side_by_side_equal_one_by_one(smoothed):
    from saywhy.core.attribute_evidence import (
        ClassSmoothing,
        EvidenceLoss,
        chunk_moments,
        class_frequency,
        fit_evidence_blocks,
        row_chunks,
    )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12))
    truth = rng.normal(size=(12, 37))
    y = sp.csr_matrix((x @ truth + rng.normal(size=(300, 37)) > 1.0).astype(float))
    chunks = row_chunks(x, y, rows=70)  # several chunks: the kept rows and targets are per chunk
    classes = (x[:, 0] > 0).astype(int)
    smoothing = ClassSmoothing(0.25, class_frequency(chunks, 2, 37, lambda rows, start: classes[start:start + len(rows)]),
                               classes=classes) if smoothed else None

    def fitted(map_blocks):
        moments = chunk_moments(chunks, 12, 37)
        loss = EvidenceLoss(chunks, moments.mean, moments.std, smoothing=smoothing)
        return fit_evidence_blocks(loss, moments, 1e-2, block=8, map_blocks=map_blocks)  # 5 blocks

    with one_blas_thread():
        alone = fitted(None)
    together = fitted(lambda solve, spans: side_by_side(solve, spans, workers=2))
    np.testing.assert_array_equal(together.weights, alone.weights)
    np.testing.assert_array_equal(together.bias, alone.bias)
    assert np.abs(alone.weights).max() > 0.1  # a fit that learned something


def test_side_by_side_blocks_need_an_evidence_loss():
    from saywhy.core.attribute_evidence import EvidenceMoments, fit_evidence_blocks
    from saywhy.errors import SaywhyError

    moments = EvidenceMoments(n=4, mean=np.zeros(2), std=np.ones(2), present=np.ones(20))
    with pytest.raises(SaywhyError, match="need an EvidenceLoss"):
        fit_evidence_blocks(lambda lo, hi, a, b: (0.0, a, b), moments, 1e-2, block=8,
                            map_blocks=lambda solve, spans: [solve(s) for s in spans])


def test_the_part_maps_learned_beside_the_forward_passes_equal_those_learned_after(tiny_noisy_synthbirds,
                                                                                   monkeypatch):
    """A fit whose forward passes leave a core free runs the part maps' sample first and learns the part
    maps beside the other images' passes; the same explainer as a fit on one core, one step after another."""
    import torch

    from saywhy import pipeline
    from saywhy.explain.explainer import ExplainerConfig

    tiny = tiny_noisy_synthbirds
    session, dataset = tiny["session"], tiny["dataset"]
    calls: list[str] = []
    real_learn = pipeline.learn_part_maps

    def learn(*args, **kwargs):
        calls.append(threading.current_thread().name)
        return real_learn(*args, **kwargs)

    monkeypatch.setattr(pipeline, "learn_part_maps", learn)

    def fit(cores: int):
        monkeypatch.setattr(pipeline, "usable_cores", lambda: cores)
        monkeypatch.setattr(blas, "usable_cores", lambda: cores)
        explainer, _ = pipeline.fit_explainer(dataset, session.model, session.preprocess, ExplainerConfig(min_df=1),
                                              extractor=tiny["extractor"], progress=False)
        return explainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with one_blas_thread():
            alone = fit(1)
        together = fit(2)
    finally:
        torch.set_num_threads(threads)
    assert calls == ["MainThread", "saywhy-beside"]
    assert together.has_part_maps and together.pools_parts
    a, b = alone.part_maps_.arrays(), together.part_maps_.arrays()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    test = dataset.split(train=False)[:8]
    assert [e.sentence for e in pipeline.ExplainerSession(together, session.model, session.preprocess).explain(test)] \
        == [e.sentence for e in pipeline.ExplainerSession(alone, session.model, session.preprocess).explain(test)]


def test_maps_spilled_with_some_images_first_come_back_in_the_records_order(tiny_noisy_synthbirds, tmp_path):
    from saywhy.data.records import ImageRecord
    from saywhy.pipeline import spilled_map_activations

    tiny = tiny_noisy_synthbirds
    session = tiny["session"]
    records = list(tiny["dataset"].split(train=True)[:40])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    records[7] = ImageRecord(image_id=999999, path=broken, class_id=records[7].class_id, is_train=True)
    first = [3, 7, 20, 33]
    got: list = []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = spilled_map_activations(session.model, records, session.preprocess, session.layers, tmp_path / "a")
    ahead = spilled_map_activations(session.model, records, session.preprocess, session.layers, tmp_path / "b",
                                    first=first, when_first=got.append)
    assert plain.n_unreadable == ahead.n_unreadable == 1
    np.testing.assert_array_equal(ahead.index, plain.index)  # the records' order, the broken one left out
    np.testing.assert_allclose(ahead.pooled, plain.pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ahead.maps), np.asarray(plain.maps), rtol=1e-5, atol=1e-6)
    (early,) = got
    assert early.n_items == 4 and early.index.tolist() == [0, 2, 3]  # positions in first; 7 is unreadable
    rows = [plain.index.tolist().index(p) for p in (3, 20, 33)]
    np.testing.assert_allclose(early.maps, np.asarray(plain.maps)[rows], rtol=1e-5, atol=1e-6)


def test_a_failure_beside_the_forward_passes_reaches_the_caller_and_gives_blas_back(tiny_noisy_synthbirds,
                                                                                    monkeypatch):
    import torch

    from saywhy import pipeline
    from saywhy.explain.explainer import ExplainerConfig

    tiny = tiny_noisy_synthbirds
    session, dataset = tiny["session"], tiny["dataset"]

    ran: list[str] = []

    def broken(*args, **kwargs):
        ran.append(threading.current_thread().name)
        raise RuntimeError("part maps failed")

    monkeypatch.setattr(pipeline, "learn_part_maps", broken)
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 2)
    before = _blas_threads()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(RuntimeError, match="part maps failed"):
            pipeline.fit_explainer(dataset, session.model, session.preprocess, ExplainerConfig(min_df=1),
                                   extractor=tiny["extractor"], progress=False)
    finally:
        torch.set_num_threads(threads)
    assert ran == ["saywhy-beside"]  # it failed beside the forward passes, and the caller heard of it
    assert _blas_threads() == before and blas._SIDE_BY_SIDE == 0
    assert not [t for t in threading.enumerate() if t.name == "saywhy-beside"]


def test_an_abandoned_beside_gives_blas_back_when_it_ends():
    """After Ctrl-C the caller stops waiting: the thread itself gives the count back as it ends, and BLAS's
    threads (or, where OpenBLAS ignores a setting made on another thread, the next section on this one)."""
    import time

    before = _blas_threads()
    running = Beside(lambda: time.sleep(0.2)).start()
    assert blas._SIDE_BY_SIDE == 1
    running._thread.join()  # nobody calls wait() or result()
    assert blas._SIDE_BY_SIDE == 0 and blas._BLAS_HOLDERS == 0
    blas.restore_blas()  # on this thread: where OpenBLAS ignored the thread's own restore, this gives it back
    assert _blas_threads() == before


def test_one_blas_thread_holds_until_the_last_section_of_any_thread_closes():
    """Two threads' sections overlapping: the first to close must not give BLAS its threads back under the
    other (an explanation on one thread beside a fit on another changed the fit's rounding)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        outside = _blas_threads()
        if not outside or set(outside) == {1}:
            pytest.skip("numpy's BLAS runs on one thread only here")
        opened, main_closed = threading.Event(), threading.Event()
        seen: dict[str, list[int]] = {}

        def second() -> None:
            with one_blas_thread():
                opened.set()
                main_closed.wait(5)
                seen["after the main thread's section closed"] = [lib.get_num_threads() for lib in blas._BLAS]

        worker = threading.Thread(target=second)
        with one_blas_thread():  # the main thread's section opens first and closes first
            worker.start()
            assert opened.wait(5)
        main_closed.set()
        worker.join(10)
        assert set(seen["after the main thread's section closed"]) == {1} and blas._BLAS_HOLDERS == 0
        blas.restore_blas()  # where the worker's restore did not take (OpenBLAS 0.3.31), the main thread's does
        assert _blas_threads() == outside


def test_a_nested_side_by_side_on_another_thread_keeps_one_blas_thread_after_the_outer_one_ends():
    """Thread B's side-by-side runs as a loop while the main thread's is open; the main one ending first
    must not give BLAS its threads back under B's remaining items."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        if set(_blas_threads()) <= {1}:
            pytest.skip("numpy's BLAS runs on one thread only here")
        started, outer_done = threading.Event(), threading.Event()
        seen: list[list[int]] = []

        def item(x: int) -> int:
            if x == 0:
                started.set()
                outer_done.wait(5)
            seen.append([lib.get_num_threads() for lib in blas._BLAS])
            return x

        worker = threading.Thread(target=lambda: side_by_side(item, [0, 1]))
        side_by_side(lambda x: (worker.start(), started.wait(5)) if x == 0 else None, [0, 1], workers=2)
        outer_done.set()
        worker.join(10)
        assert len(seen) == 2 and all(set(threads) == {1} for threads in seen)
        blas.restore_blas()
