"""Caption targets drawn toward the predicted class (ExplainerConfig.evidence_smoothing), and retrieval
ranked by the score the explanations show (ExplainerConfig.retrieval_score)."""
import numpy as np
import pytest
import scipy.sparse as sp

from saywhy.core.attribute_evidence import (
    ClassSmoothing,
    EvidenceLoss,
    chunk_moments,
    class_frequency,
    fit_attribute_evidence,
    row_chunks,
)
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig


def _head(n_filters: int, n_classes: int):
    """A head that predicts class c exactly when filter c is the largest of the first n_classes."""
    weights = np.zeros((n_classes, n_filters))
    weights[np.arange(n_classes), np.arange(n_classes)] = 1.0
    return weights, np.zeros(n_classes)


def test_class_frequency_counts_each_predicted_class():
    pooled = np.array([[2.0, 0.0], [3.0, 1.0], [0.0, 1.0], [0.0, 5.0]])  # classes 0, 0, 1, 1
    incidence = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 1], [1, 1, 0], [0, 1, 0]], float))
    weights, bias = _head(2, 2)
    frequency = class_frequency(row_chunks(pooled, incidence, 3), 2, 3,
                                lambda x, start: (x @ weights.T + bias).argmax(axis=1))
    np.testing.assert_allclose(frequency, [[0.5, 0.0, 1.0], [0.5, 1.0, 0.0]])


def test_smoothed_loss_is_cross_entropy_on_the_mixed_targets():
    rng = np.random.default_rng(0)
    pooled = rng.gamma(2.0, size=(53, 6))
    incidence = sp.random(53, 7, density=0.3, random_state=1, format="csr")
    weights, bias = _head(6, 3)
    classes = (pooled @ weights.T).argmax(axis=1)
    frequency = rng.random((3, 7))
    share = 0.4
    moments = chunk_moments(row_chunks(pooled, incidence), 6, 7)
    a, b = rng.normal(size=(4, 6)) * 0.3, rng.normal(size=4)
    # by hand: targets (1 - share) y + share frequency[class], attributes 2..5
    y = (incidence.toarray() > 0)[:, 2:6]
    target = (1 - share) * y + share * frequency[classes, 2:6]
    xs = (pooled - moments.mean) / moments.std
    z = xs @ a.T + b
    loss = np.sum(np.logaddexp(0, z) - target * z)
    residual = 1 / (1 + np.exp(-z)) - target
    for rows in (53, 8):  # one chunk, and chunks of 8 rows
        for smoothing in (ClassSmoothing(share, frequency, weights, bias), ClassSmoothing(share, frequency, classes=classes)):
            got = EvidenceLoss(row_chunks(pooled, incidence, rows), moments.mean, moments.std, np.float64, smoothing)
            for _ in range(2):  # the second evaluation reads the pairs and classes it kept
                value, grad_a, grad_b = got(2, 6, a, b)
                assert value == pytest.approx(loss, rel=1e-12)
                np.testing.assert_allclose(grad_a, residual.T @ xs, rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(grad_b, residual.sum(axis=0), rtol=1e-10, atol=1e-12)


def test_smoothing_pulls_noisy_captions_toward_their_class():
    # Two classes told apart by filter 0 or 1; "red crown" is named in the captions of a random 80% of
    # class 0's images and 10% of class 1's. Filters 2-9 are noise the 0/1 fit can lean on to follow
    # which images happened to be captioned with it; drawn toward the class, each class's images get
    # about the class's frequency, and the spread within a class (what the noise fits) shrinks.
    rng = np.random.default_rng(2)
    n = 200
    labels = np.arange(n) % 2
    pooled = rng.random((n, 10))
    pooled[np.arange(n), labels] += 3.0
    named = rng.random(n) < np.where(labels == 0, 0.8, 0.1)
    incidence = sp.csr_matrix(named[:, None].astype(float))
    weights, bias = _head(10, 2)
    frequency = class_frequency(row_chunks(pooled, incidence), 2, 1, lambda x, s: (x @ weights.T).argmax(axis=1))
    plain = fit_attribute_evidence(pooled, incidence, l2=1e-3).probability(pooled)[:, 0]
    smooth = fit_attribute_evidence(pooled, incidence, l2=1e-3,
                                    smoothing=ClassSmoothing(0.8, frequency, weights, bias)).probability(pooled)[:, 0]
    for c in (0, 1):
        assert smooth[labels == c].std() < 0.5 * plain[labels == c].std()
        assert smooth[labels == c].mean() == pytest.approx(frequency[c, 0], abs=0.05)
    # share 0 is the plain fit
    zero = fit_attribute_evidence(pooled, incidence, l2=1e-3, smoothing=ClassSmoothing(0.0, frequency, weights, bias))
    np.testing.assert_allclose(zero.probability(pooled)[:, 0], plain, rtol=1e-12)


def test_the_smoothing_share_is_refused_outside_zero_to_one():
    for share in (1.0, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(SaywhyError, match="evidence smoothing must be a number in"):
            ExplainerConfig(evidence_smoothing=share)
    with pytest.raises(SaywhyError, match="unknown retrieval score"):
        ExplainerConfig(retrieval_score="both")
    with pytest.raises(SaywhyError, match="needs the head's weights or the images' classes"):
        ClassSmoothing(0.5, np.zeros((2, 2)))


def _fitted(tmp_path, **config):
    rng = np.random.default_rng(4)
    n = 120
    labels = np.arange(n) % 3
    pooled = rng.random((n, 6))
    pooled[np.arange(n), labels] += 2.0
    vocabulary = ["red crown", "blue wing", "long tail", "white belly"]
    counts = sp.csr_matrix((rng.random((n, 4)) < np.array([0.7, 0.2, 0.5, 0.3])[None] * (1 + (labels[:, None] == 0)))
                           .astype(float))
    weights, bias = _head(6, 3)
    explainer = Explainer(ExplainerConfig(min_df=1, **config)).fit(pooled, counts, vocabulary, weights,
                                                                   ["a", "b", "c"], bias)
    explainer.save(tmp_path / "exp")
    return explainer, Explainer.load(tmp_path / "exp"), pooled


def test_an_explainer_fitted_with_smoothing_keeps_it_and_differs(tmp_path):
    plain, _, pooled = _fitted(tmp_path / "a")
    smooth, loaded, _ = _fitted(tmp_path / "b", evidence_smoothing=0.5)
    assert loaded.config.evidence_smoothing == 0.5
    np.testing.assert_allclose(loaded.readable_scores(pooled), smooth.readable_scores(pooled), rtol=1e-12)
    assert np.abs(smooth.readable_scores(pooled) - plain.readable_scores(pooled)).max() > 1e-3


def test_retrieval_ranks_by_the_chosen_score(tmp_path):
    explainer, _, pooled = _fitted(tmp_path, retrieval_score="image")
    np.testing.assert_allclose(explainer.retrieval_log_scores(pooled), np.log(explainer.readable_scores(pooled)),
                               rtol=1e-9)
    assert ExplainerConfig().retrieval_score == "image"  # the default, chosen on validation
    explainer.config = ExplainerConfig(min_df=1, retrieval_score="class")  # eq. 5, what explanations rank by
    np.testing.assert_array_equal(explainer.retrieval_log_scores(pooled), explainer.attribute_log_pdf(pooled))
    assert ExplainerConfig.paper().retrieval_score == "class"  # the paper's Table 2
    assert ExplainerConfig.paper(retrieval_score="image").retrieval_score == "image"


def test_an_explainer_saved_before_the_setting_keeps_ranking_by_eq_5(tmp_path):
    import json

    _, loaded, _ = _fitted(tmp_path)
    assert loaded.config.retrieval_score == "image"
    meta_path = tmp_path / "exp" / "explainer.json"
    meta = json.loads(meta_path.read_text())
    from saywhy.explain.explainer import LEGACY_SETTINGS, _content_sha256  # what an older saywhy wrote

    for name in LEGACY_SETTINGS:  # the settings added since, whose defaults may have moved
        del meta["config"][name]

    meta["content_sha256"] = _content_sha256(meta)
    meta_path.write_text(json.dumps(meta))
    old = Explainer.load(tmp_path / "exp")
    assert old.config.retrieval_score == "class" and old.config.evidence_smoothing == 0.0
    assert {name: getattr(old.config, name) for name in LEGACY_SETTINGS} == LEGACY_SETTINGS
    assert old.config.evidence_pooling == "global" and old.config.visibility_threshold == 0.0
