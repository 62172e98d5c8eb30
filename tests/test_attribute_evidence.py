"""The evidence model (saywhy's alternative to eq. 1-4): known answers on tiny arrays."""
import numpy as np
import pytest
import scipy.sparse as sp

from saywhy.core.attribute_evidence import AttributeEvidence, fit_attribute_evidence
from saywhy.errors import SaywhyError


def _images(n: int = 300, seed: int = 0):
    """Filter 0 fires on red crowns, filter 1 on long tails, filter 2 on every image."""
    rng = np.random.default_rng(seed)
    red, tail = rng.random(n) < 0.3, rng.random(n) < 0.5
    pooled = np.stack([np.where(red, 4.0, 0.5), np.where(tail, 3.0, 0.3), np.full(n, 2.0)], axis=1)
    pooled += rng.random((n, 3)) * 0.2
    return pooled, sp.csr_matrix(np.stack([red, tail], axis=1).astype(float))


def test_each_attribute_is_tied_to_its_own_filter():
    pooled, incidence = _images()
    model = fit_attribute_evidence(pooled, incidence, l2=1e-4)
    assert model.weights.shape == (2, 3) and model.bias.shape == (2,)
    assert model.weights[0].argmax() == 0 and model.weights[1].argmax() == 1
    p = model.probability(pooled)
    red = incidence.toarray()[:, 0] > 0
    assert p[red, 0].min() > 0.9 and p[~red, 0].max() < 0.1


def test_uniform_filter_weights_give_back_the_image_probability():
    pooled, incidence = _images()
    model = fit_attribute_evidence(pooled, incidence)
    np.testing.assert_allclose(model.probability(pooled, np.full(pooled.shape, 1 / 3)), model.probability(pooled))


def test_filter_weights_scale_each_filters_evidence():
    model = AttributeEvidence(np.array([[2.0, -1.0]]), np.array([0.5]))
    pooled = np.array([[1.0, 3.0]])
    # F * p(f|x,c) = [2, 0]: filter 0's evidence doubled, filter 1's dropped.
    np.testing.assert_allclose(model.logits(pooled, np.array([[1.0, 0.0]])), [[0.5 + 2 * 2.0]])
    np.testing.assert_allclose(model.logits(pooled), [[0.5 + 2.0 - 3.0]])


def test_filter_evidence_counts_positive_weights_only():
    model = AttributeEvidence(np.array([[2.0, -1.0], [1.0, 1.0]]), np.zeros(2))
    np.testing.assert_allclose(model.filter_evidence(np.array([[1.0, 3.0]]), np.array([[0, 1]])), [[3.0, 3.0]])


def test_bad_inputs_are_clear_errors():
    pooled, incidence = _images(20)
    with pytest.raises(SaywhyError, match="19 have activations"):
        fit_attribute_evidence(pooled[:19], incidence)
    with pytest.raises(SaywhyError, match="must be positive"):
        fit_attribute_evidence(pooled, incidence, l2=0)
    with pytest.raises(SaywhyError, match="filters"):
        AttributeEvidence(np.ones((1, 3)), np.zeros(1)).logits(np.ones((1, 2)))


def test_probability_at_pairs_equals_the_full_matrix_there():
    rng = np.random.default_rng(3)
    model = AttributeEvidence(rng.normal(size=(7, 5)), rng.normal(size=7))
    pooled = rng.gamma(2.0, size=(4, 5))
    rows, columns = np.array([0, 0, 3, 2, 1]), np.array([6, 1, 1, 0, 4])
    np.testing.assert_allclose(model.probability_at(pooled, rows, columns), model.probability(pooled)[rows, columns],
                               rtol=1e-12)
    assert model.probability_at(pooled, rows[:0], columns[:0]).shape == (0,)


def test_float32_ranking_keeps_the_order_and_the_cited_numbers_are_exact():
    """logits(single=True) reads float32 weights: the same order as float64 except at near-ties;
    logits_at gives the float64 numbers of chosen pairs, with and without filter weights."""
    rng = np.random.default_rng(3)
    model = AttributeEvidence(rng.normal(size=(40, 64)), rng.normal(size=40))
    pooled = rng.gamma(2.0, 1.0, (6, 64))
    weights = rng.dirichlet(np.ones(64), 6)
    exact, fast = model.logits(pooled, weights), model.logits(pooled, weights, single=True)
    assert fast.dtype == np.float64 and np.abs(fast - exact).max() < 1e-4 * np.abs(exact).max()
    gaps = np.diff(np.sort(exact, axis=1), axis=1).min(axis=1)
    assert (gaps > 10 * np.abs(fast - exact).max()).all()  # no near-ties here: the orders must agree exactly
    assert np.array_equal(np.argsort(-exact, axis=1, kind="stable"), np.argsort(-fast, axis=1, kind="stable"))
    rows, columns = np.array([0, 0, 3, 5]), np.array([7, 39, 0, 22])
    np.testing.assert_allclose(model.logits_at(pooled, rows, columns, weights), exact[rows, columns], rtol=1e-12)
    np.testing.assert_allclose(model.logits_at(pooled, rows, columns), model.logits(pooled)[rows, columns], rtol=1e-12)
