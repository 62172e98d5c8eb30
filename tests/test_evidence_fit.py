"""The evidence fit at any vocabulary size, in chunks, in float32 (issue 13, item 3)."""
import numpy as np
import scipy.sparse as sp

from saywhy.core.attribute_evidence import (
    EvidenceLoss,
    chunk_moments,
    fit_attribute_evidence,
    row_chunks,
)


def _vocabulary(n_images: int, n_attributes: int, n_filters: int = 4, seed: int = 0):
    """Attribute t is in the captions exactly when filter t % n_filters fires (2 to 3, else 0 to 1)."""
    rng = np.random.default_rng(seed)
    fires = rng.random((n_images, n_filters)) < 0.5
    pooled = rng.random((n_images, n_filters)) + 2.0 * fires
    incidence = sp.csr_matrix(fires[:, np.arange(n_attributes) % n_filters].astype(np.float64))
    return pooled, incidence, fires


def test_ten_thousand_attributes_are_fitted_like_one():
    # Before issue 13 the loss was divided by images x attributes: at 10,000 attributes the
    # starting gradient was below L-BFGS-B's tolerance (or the penalty 10,000 times too strong),
    # so every weight stayed at about zero and every image got the same explanation.
    pooled, incidence, fires = _vocabulary(120, 10_000)
    model = fit_attribute_evidence(pooled, incidence, l2=1e-2)
    alone = fit_attribute_evidence(pooled, incidence[:, :1], l2=1e-2)
    p = model.probability(pooled)
    for t in (0, 1, 4_321, 9_999):
        assert model.weights[t].argmax() == t % 4
        assert p[fires[:, t % 4], t].min() > 0.5 > p[~fires[:, t % 4], t].max()
    # The same problem, fitted alone: the same model to the stopping tolerance (per attribute).
    assert np.abs(p[:, 0] - alone.probability(pooled)[:, 0]).max() < 0.02


def test_float32_chunks_agree_with_float64():
    # The stated tolerance of the float32 loss: 1e-6 relative on the loss, 1e-4 on the gradient.
    rng = np.random.default_rng(1)
    pooled = rng.gamma(2.0, size=(700, 16))
    incidence = sp.random(700, 40, density=0.1, random_state=2, format="csr")
    moments = chunk_moments(row_chunks(pooled, incidence, 700), 16, 40)
    a, b = rng.normal(size=(40, 16)) * 0.3, rng.normal(size=40)
    exact = EvidenceLoss(row_chunks(pooled, incidence, 700), moments.mean, moments.std, np.float64)(0, 40, a, b)
    fast = EvidenceLoss(row_chunks(pooled, incidence, 64), moments.mean, moments.std, np.float32)(0, 40, a, b)
    assert abs(fast[0] - exact[0]) < 1e-6 * abs(exact[0])
    np.testing.assert_allclose(fast[1], exact[1], rtol=1e-4, atol=1e-4 * np.abs(exact[1]).max())
    np.testing.assert_allclose(fast[2], exact[2], rtol=1e-4, atol=1e-4 * np.abs(exact[2]).max())


def test_chunk_size_does_not_change_the_float64_loss():
    rng = np.random.default_rng(3)
    pooled = rng.random((301, 5))
    incidence = sp.random(301, 9, density=0.2, random_state=4, format="csr")
    moments = chunk_moments(row_chunks(pooled, incidence, 301), 5, 9)
    np.testing.assert_allclose(moments.mean, pooled.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.std, pooled.std(axis=0) + 1e-6, rtol=1e-12)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=4)
    whole = EvidenceLoss(row_chunks(pooled, incidence, 301), moments.mean, moments.std, np.float64)(2, 6, a, b)
    parts = EvidenceLoss(row_chunks(pooled, incidence, 7), moments.mean, moments.std, np.float64)(2, 6, a, b)
    # Dense reference: BCE with logits on the standardized activations.
    xs = (pooled - moments.mean) / moments.std
    z = xs @ a.T + b
    y = incidence.toarray()[:, 2:6] > 0
    np.testing.assert_allclose(whole[0], np.sum(np.logaddexp(0, z) - y * z), rtol=1e-12)
    np.testing.assert_allclose(whole[1], (1 / (1 + np.exp(-z)) - y).T @ xs, rtol=1e-10)
    for w, p in zip(whole, parts):
        np.testing.assert_allclose(p, w, rtol=1e-12)


def test_a_fit_started_elsewhere_reaches_the_same_optimum():
    """Each attribute's problem is convex: a warm start (the part refit starts from the global fit) changes
    the path, not the optimum."""
    from saywhy.core.attribute_evidence import AttributeEvidence, fit_attribute_evidence

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 6))
    y = (x[:, :3] + rng.normal(scale=0.7, size=(400, 3)) > 0).astype(float)
    cold = fit_attribute_evidence(x, y, l2=1e-2)
    start = AttributeEvidence(rng.normal(size=(3, 6)), rng.normal(size=3))
    warm = fit_attribute_evidence(x, y, l2=1e-2, start=start)
    # within what the stopping rule leaves (its tolerance is on the gradient, not the weights)
    np.testing.assert_allclose(warm.weights, cold.weights, atol=5e-3 * np.abs(cold.weights).max())
    np.testing.assert_allclose(warm.bias, cold.bias, atol=5e-3 * np.abs(cold.weights).max())
    near = fit_attribute_evidence(x, y, l2=1e-2, start=cold, max_iter=1)  # at the optimum it stays there
    np.testing.assert_allclose(near.weights, cold.weights, atol=1e-6 * np.abs(cold.weights).max())


def test_kept_rows_and_targets_give_the_loss_computed_afresh(monkeypatch):
    # L-BFGS evaluates each block tens of times: the standardized rows (and the smoothed targets of the
    # block) are kept up to KEEP_BYTES, chunks past it are made again. Kept, partly kept or made every
    # time, the loss is the same, across evaluations and across blocks (a block's targets are its own).
    import saywhy.core.attribute_evidence as ae

    rng = np.random.default_rng(5)
    pooled = rng.gamma(2.0, size=(90, 6))
    incidence = sp.random(90, 8, density=0.3, random_state=6, format="csr")
    moments = chunk_moments(row_chunks(pooled, incidence), 6, 8)
    classes = rng.integers(0, 3, size=90)
    smoothing = ae.ClassSmoothing(0.3, rng.random((3, 8)), classes=classes)

    def evaluations(keep_bytes):
        monkeypatch.setattr(ae, "KEEP_BYTES", keep_bytes)
        loss = EvidenceLoss(row_chunks(pooled, incidence, 20), moments.mean, moments.std, np.float64, smoothing)
        out = []
        for lo, hi, seed in ((0, 4, 0), (0, 4, 1), (4, 8, 2), (4, 8, 3), (0, 4, 4)):
            a = np.random.default_rng(seed).normal(size=(4, 6))
            out.append(loss(lo, hi, a, np.zeros(4)))
        return out, loss._kept_bytes

    afresh, kept_nothing = evaluations(0)
    assert kept_nothing == 0
    for keep_bytes in (2 * 20 * 6 * 8, 10**9):  # the first two chunks' rows; everything
        got, kept = evaluations(keep_bytes)
        assert 0 < kept <= keep_bytes
        for g, w in zip(got, afresh):
            for x, y in zip(g, w):
                np.testing.assert_allclose(x, y, rtol=1e-13)
