"""The paper's equations on hand-built arrays with known answers."""
import numpy as np
import pytest
import scipy.sparse as sp

from saywhy.core.filter_attribute import (
    FilterAttributeStatistics,
    attribute_incidence,
    filter_attribute_pdf,
    filter_given_image,
    top_fraction_thresholds,
)
from saywhy.core.image_class import class_attribute_pdf, filter_given_class, image_class_attribute_pdf
from saywhy.core.normalization import SIGMAS, get_sigma
from saywhy.errors import SaywhyError

VOCAB = ["red crown", "blue wing", "small bird"]
# 6 images x 3 filters: filter 0 fires only on the "red crown" images (0, 1, 2).
POOLED = np.array([
    [9.0, 1.0, 1.0],
    [8.0, 1.0, 1.0],
    [9.0, 1.0, 1.0],
    [0.0, 1.0, 9.0],
    [0.0, 1.0, 8.0],
    [0.0, 1.0, 9.0],
])
COUNTS = sp.csr_matrix(np.array([
    [2, 0, 1],
    [1, 0, 1],
    [1, 0, 1],
    [0, 1, 1],
    [0, 2, 1],
    [0, 1, 1],
]))


def test_eq3_l1_makes_each_image_a_distribution_over_filters():
    p = filter_given_image(POOLED, "l1")
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [9 / 11, 1 / 11, 1 / 11])


def test_eq4_incidence_is_binary_and_sparse():
    incidence = attribute_incidence(COUNTS)
    assert incidence.nnz == 12
    assert set(incidence.data.tolist()) == {1.0}


def test_eq2_likelihood_is_incidence_times_filter_given_image():
    p = filter_given_image(POOLED, "l1")
    stats = FilterAttributeStatistics.from_chunk(p, attribute_incidence(COUNTS))
    np.testing.assert_allclose(stats.likelihood_sum[0], p[:3].sum(axis=0))
    np.testing.assert_allclose(stats.likelihood_sum[2], p.sum(axis=0))
    assert stats.attribute_images.tolist() == [3, 3, 6]


def test_top_threshold_of_a_mostly_zero_filter_counts_only_images_that_activate_it():
    # filter 0 is zero on 95% of the images: the 90% quantile is 0, and "activation >= 0" used
    # to count every image as one of its top images
    pooled = np.zeros((20, 2))
    pooled[0, 0] = 4.0
    pooled[:, 1] = np.arange(20.0)
    thresholds = top_fraction_thresholds(pooled, 0.1)
    top = filter_given_image(pooled, "top", thresholds=thresholds)
    assert top[:, 0].tolist() == [1.0] + [0.0] * 19
    assert top[:, 1].sum() == 2  # the 10% most activating of an ordinary filter


def test_red_crown_filter_puts_red_crown_first():
    stats = FilterAttributeStatistics.from_chunk(filter_given_image(POOLED), attribute_incidence(COUNTS))
    pdf = filter_attribute_pdf(stats, prior=np.full(3, 1 / 3))
    assert pdf.shape == (3, 3)
    np.testing.assert_allclose(pdf.sum(axis=1), 1.0)
    assert VOCAB[int(pdf[0].argmax())] == "red crown"
    assert VOCAB[int(pdf[2].argmax())] != "red crown"


def test_eq1_prior_reweights_attributes():
    stats = FilterAttributeStatistics.from_chunk(filter_given_image(POOLED), attribute_incidence(COUNTS))
    # "small bird" is in every image, so with a uniform prior it wins for filter 1;
    # a prior that discounts it lets a specific attribute win.
    uniform = filter_attribute_pdf(stats, np.full(3, 1 / 3))
    assert VOCAB[int(uniform[1].argmax())] == "small bird"
    specific = filter_attribute_pdf(stats, np.array([0.45, 0.45, 0.1]))
    assert VOCAB[int(specific[1].argmax())] != "small bird"


def test_mean_likelihood_divides_by_attribute_count():
    p = filter_given_image(POOLED)
    stats = FilterAttributeStatistics.from_chunk(p, attribute_incidence(COUNTS))
    pdf = filter_attribute_pdf(stats, np.ones(3), likelihood="mean")
    expected = np.stack([p[:3].mean(0), p[3:].mean(0), p.mean(0)]).T
    np.testing.assert_allclose(pdf, expected / expected.sum(1, keepdims=True))


def test_eq5_eq6_image_with_red_crown_filter_and_positive_weight():
    stats = FilterAttributeStatistics.from_chunk(filter_given_image(POOLED), attribute_incidence(COUNTS))
    pdf = filter_attribute_pdf(stats, np.full(3, 1 / 3))
    weights = np.array([[2.0, 0.0, -1.0]])  # class 0 votes for filter 0, against filter 2
    p = image_class_attribute_pdf(pdf, POOLED[:1], weights)
    np.testing.assert_allclose(p.sum(), 1.0)
    assert VOCAB[int(p[0].argmax())] == "red crown"
    # eq. 6 with l1: only filter 0 has a positive product, so p(t|x,c) = p(t|f_0)
    np.testing.assert_allclose(p[0], pdf[0])


def test_eq7_eq8_class_level():
    pdf = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    weights = np.array([[1.0, 3.0], [4.0, 0.0]])
    np.testing.assert_allclose(filter_given_class(weights), [[0.25, 0.75], [1.0, 0.0]])
    np.testing.assert_allclose(class_attribute_pdf(pdf, weights)[0], 0.25 * pdf[0] + 0.75 * pdf[1])


@pytest.mark.parametrize("name", sorted(SIGMAS))
def test_every_sigma_is_non_negative_and_keeps_order(name):
    scores = np.array([[3.0, 1.0, 2.0]])
    out = get_sigma(name)(scores, axis=1)
    assert (out >= 0).all()
    assert out[0].argmax() == 0 and out[0].argmin() == 1


def test_all_zero_row_stays_zero_not_nan():
    out = get_sigma("l1")(np.zeros((1, 3)), axis=1)
    assert np.isfinite(out).all() and out.sum() == 0


def test_unknown_sigma_lists_choices():
    with pytest.raises(SaywhyError, match="l1"):
        get_sigma("l3")


def test_mismatched_images_are_refused():
    with pytest.raises(SaywhyError, match="same images"):
        FilterAttributeStatistics.from_chunk(np.ones((4, 3)), COUNTS)


def test_filter_scale_max_divides_by_filter_maximum():
    out = filter_given_image(np.array([[2.0, 10.0], [1.0, 5.0]]), sigma="identity", filter_scale="max")
    np.testing.assert_allclose(out, [[1.0, 1.0], [0.5, 0.5]])


def test_top_sigma_marks_each_filters_most_activating_images():
    from saywhy.core.filter_attribute import top_fraction_thresholds

    thresholds = top_fraction_thresholds(POOLED, 0.5)
    marked = filter_given_image(POOLED, "top", thresholds=thresholds)
    assert marked[:, 0].tolist() == [1, 1, 1, 0, 0, 0]
    assert marked[:, 2].tolist() == [0, 0, 0, 1, 1, 1]


def test_top_sigma_without_thresholds_is_refused():
    with pytest.raises(SaywhyError, match="thresholds"):
        filter_given_image(POOLED, "top")


@pytest.mark.parametrize("fraction, chunk, spare", [(0.1, 7, 3), (0.25, 50, 8), (1.0, 13, 5), (0.5, 1, 1)])
def test_top_values_in_chunks_and_merged_are_np_quantiles_numbers(fraction, chunk, spare):
    from saywhy.core.filter_attribute import TopValues

    rng = np.random.default_rng(7)
    pooled = rng.gamma(2.0, size=(301, 4)).astype(np.float32)
    pooled[:200, 3] = 0.0  # a filter at its floor on most images
    expected = np.quantile(pooled.astype(np.float64), 1 - fraction, axis=0)
    whole, left, right = (TopValues(301, 4, fraction, spare=spare) for _ in range(3))
    for start in range(0, 301, chunk):  # many compactions of a small buffer
        whole.add(pooled[start:start + chunk])
        (left if start < 150 else right).add(pooled[start:start + chunk])
    left.merge(right)
    for top in (whole, left):
        got = top.thresholds()
        floor = expected <= pooled.min(axis=0)
        np.testing.assert_array_equal(got[~floor], expected[~floor])
        assert (got[floor] > 0).all()
        assert top.kept.shape == (4, top.keep)
    too_many = TopValues(10, 4, fraction, spare=spare)
    with pytest.raises(SaywhyError, match="images"):  # while adding (a full buffer) or when asked
        too_many.add(pooled[:40])
        too_many.thresholds()
