"""Property-based tests (hypothesis): random shapes, empty inputs and non-finite values end in the
documented results or one SaywhyError, never in a crash or a non-finite explanation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from fuzz import attached_or_one_line, examples
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from saywhy.core.filter_attribute import FilterAttributeStatistics, filter_attribute_pdf, filter_given_image
from saywhy.core.normalization import SIGMAS, get_sigma
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig

FAST = examples(1.5)  # 60 in make test, 1,500 in the robustness benchmark
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
anything = st.floats(allow_nan=True, allow_infinity=True)


@FAST
@given(st.sampled_from(sorted(SIGMAS)), arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=finite))
def test_every_sigma_gives_weights_that_sum_to_one_or_zero(name, scores):
    weights = get_sigma(name)(scores, axis=1)
    assert np.isfinite(weights).all() and (weights >= 0).all()
    if name != "identity":
        sums = weights.sum(axis=1)
        assert np.all(np.isclose(sums, 1.0) | np.isclose(sums, 0.0))


@FAST
@given(arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 5)), elements=st.floats(0, 100)),
       st.data())
def test_p_t_given_f_is_a_distribution_for_every_filter_any_activity(pooled, data):
    n_images, n_filters = pooled.shape
    incidence = data.draw(arrays(np.float64, (n_images, 4), elements=st.sampled_from([0.0, 1.0])))
    stats = FilterAttributeStatistics.from_chunk(filter_given_image(pooled, "l1"), sp.csr_matrix(incidence))
    pdf = filter_attribute_pdf(stats, np.full(4, 0.25))
    assert pdf.shape == (n_filters, 4) and np.isfinite(pdf).all()
    sums = pdf.sum(axis=1)
    assert np.all(np.isclose(sums, 1.0) | np.isclose(sums, 0.0))  # a filter no image activates keeps a zero row


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    pooled = rng.random((30, 4)) * 3
    counts = sp.csr_matrix((rng.random((30, 5)) < 0.4).astype(int))
    return Explainer(ExplainerConfig(min_df=1, top_k=3)).fit(pooled, counts, [f"red part{i}" for i in range(5)],
                                                             rng.normal(size=(3, 4)), ["001.A", "002.B", "003.C"])


@FAST
@given(arrays(np.float64, st.tuples(st.integers(1, 5), st.just(4)), elements=anything))
def test_explanations_are_finite_or_refused(fitted, pooled):
    try:
        explanations = fitted.explain(pooled)
    except SaywhyError as error:  # non-finite activations, or ones so large the scores overflow: one line
        assert "\n" not in str(error)
        assert not np.isfinite(pooled).all() or "overflow" in str(error)
        return
    for e in explanations:
        assert np.isfinite(e.probability) and np.isfinite(e.logit)
        assert all(np.isfinite(s) and 0 <= s <= 1 for _, s in e.attributes)
        assert e.sentence.startswith("This is")


@FAST
@given(st.lists(st.text(alphabet="0123456789 ./_-abcXYZ\t", max_size=30), max_size=12))
def test_the_cub_reader_takes_any_images_txt(tmp_path_factory, lines):
    from conftest import write_tiny_cub

    from saywhy.data.cub import read_cub

    root = write_tiny_cub(tmp_path_factory.mktemp("cub"))
    (root / "CUB_200_2011" / "images.txt").write_text("\n".join(lines) + "\n")
    try:
        dataset = read_cub(root)
    except SaywhyError as error:
        assert "\n" not in str(error)
        return
    assert all(r.path.is_file() for r in dataset.records)


@FAST
@given(st.lists(st.one_of(st.dictionaries(st.sampled_from(["image", "attributes", "x"]),
                                          st.one_of(st.integers(-3, 9), st.text(max_size=12),
                                                    st.lists(st.one_of(st.text(max_size=8), st.integers()),
                                                             max_size=3), st.none())),
                          st.text(max_size=20)), max_size=8))
def test_the_attribute_file_reader_takes_any_jsonl(tmp_path_factory, rows):
    from conftest import write_tiny_cub

    from saywhy.data.cub import read_cub

    base = tmp_path_factory.mktemp("attributes")
    dataset = read_cub(write_tiny_cub(base))
    path = base / "attributes.jsonl"
    path.write_text("\n".join(json.dumps(r) if isinstance(r, dict) else r for r in rows) + "\n")
    attached = attached_or_one_line(dataset, path)
    if attached is None:
        return
    for record in attached.records:
        assert record.attributes is None or all(isinstance(a, str) and a for a in record.attributes)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 45), st.integers(0, 2**32 - 1))
def test_first_k_stable_is_the_head_of_a_stable_argsort(n, t, k, seed):
    """Ties (few distinct values) and infinities included: exactly argsort(kind="stable")[:, :k]."""
    from saywhy.core.ranking import first_k_stable

    rng = np.random.default_rng(seed)
    keys = rng.integers(-3, 4, (n, t)).astype(float)
    keys[rng.random((n, t)) < 0.1] = np.inf
    expected = np.argsort(keys, axis=1, kind="stable")[:, :k]
    assert [r.tolist() for r in first_k_stable(keys, k)] == expected.tolist()
