"""Per-filter attribute evidence, learned from captions: saywhy's alternative to eq. 1-4.

The paper's p(t|f) (eq. 1-4) counts how often an attribute's images activate a filter.
On real data every filter fires on every bird a little, so each attribute's column of
p(t|f) ends up close to uniform and eq. 5 returns the same frequent phrases for every
image (on cub50: "white belly" in 74-79% of sentences, 27-31 distinct attributes in all).

Here each attribute t gets a logistic model on the pooled activations phi(x):

    p(t | x) = sigmoid(b_t + sum_k a_tk phi_k(x))

so ``a_tk phi_k(x)`` is filter k's evidence for t in image x, in log-odds: positive
where the filter's activation makes the captions more likely to name t, negative where
less. The weights are fitted to the same images and the same eq. 4 incidence the paper
uses (is t among the image's caption phrases?), by L2-penalized maximum likelihood.

Eq. 5 then keeps its form, with evidence averaged instead of probabilities: the class-
conditional evidence weighs each filter by p(f_k|x,c) of eq. 6,

    p(t | x, c) = sigmoid(b_t + F * sum_k a_tk phi_k(x) p(f_k | x, c))

where F is the number of filters, so a uniform p(f|x,c) = 1/F gives back p(t|x). What
the image shows through the filters that carry the class decision is what explains it.
p(t|x) is a calibrated probability (fitted by maximum likelihood); p(t|x,c) is not: the
weighting multiplies the evidence of the few filters that carry the decision (by F times
their share), so it ranks attributes for the class and rounds to 1 for strong evidence.
Weights that only down-weight (p / max p) leave the bias in charge and every image gets
the same frequent attributes again (a scratch comparison on cub50: 20 distinct
attributes across the test explanations, against 189).
Eq. 9 grounding uses alpha_k = a_tk: the heatmap sum_k a_tk f_k(x) averages, over the
map, to the attribute's logit minus b_t, so the heatmap is the logit laid out in space
(other choices in ``Explainer.grounding_alphas``).

Everything here is arrays in, arrays out. Unlike eq. 2, the fit is iterative, not a sum
of per-chunk statistics; it needs the pooled activations (F numbers per image) in memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.sparse as sp

from saywhy.errors import SaywhyError


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # exact, and never overflows


@dataclass
class AttributeEvidence:
    """Fitted logistic models, one per attribute: ``weights`` (T x F) on raw pooled activations, ``bias`` (T)."""

    weights: np.ndarray
    bias: np.ndarray

    def logits(self, pooled: np.ndarray, filter_weights: np.ndarray | None = None) -> np.ndarray:
        """(images x attributes) log-odds; with ``filter_weights`` (images x filters), p(f|x,c) of eq. 6,
        each filter's evidence is weighted by F * p(f_k|x,c) (eq. 5 in log-odds)."""
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        if pooled.shape[1] != self.weights.shape[1]:
            raise SaywhyError(f"activations have {pooled.shape[1]} filters but the attribute model {self.weights.shape[1]}")
        if filter_weights is not None:
            pooled = pooled * (pooled.shape[1] * np.asarray(filter_weights, np.float64))
        return pooled @ self.weights.T + self.bias

    def probability(self, pooled: np.ndarray, filter_weights: np.ndarray | None = None) -> np.ndarray:
        """p(t|x), or p(t|x,c) with ``filter_weights`` = p(f|x,c)."""
        return _sigmoid(self.logits(pooled, filter_weights))

    def filter_evidence(self, pooled: np.ndarray, attributes: np.ndarray) -> np.ndarray:
        """(images x filters): each filter's positive evidence a_tk phi_k(x), summed over the given
        attribute indices (one row of indices per image)."""
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        summed = self.weights[np.asarray(attributes)].clip(min=0.0).sum(axis=1)  # (images, filters)
        return pooled * summed


def fit_attribute_evidence(pooled: np.ndarray, incidence: sp.spmatrix | np.ndarray, l2: float = 1e-3,
                           max_iter: int = 300) -> AttributeEvidence:
    """Fit every attribute's logistic model at once (L-BFGS on the mean cross-entropy).

    Activations are standardized per filter for the fit (so the L2 penalty ``l2`` / 2 *
    ||a||^2 treats every filter alike), then the weights are mapped back to raw
    activations. Biases start at the attributes' log base-rate odds and are not penalized.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 3))
    >>> y = (x[:, [0]] > 0).astype(float)       # the attribute is there when filter 0 is high
    >>> model = fit_attribute_evidence(x, y, l2=1e-4)
    >>> int(np.argmax(model.weights[0])), bool(model.weights[0, 0] > 1)
    (0, True)
    """
    x = np.asarray(pooled, np.float64)
    y = incidence.toarray() if sp.issparse(incidence) else np.asarray(incidence, np.float64)
    y = (y > 0).astype(np.float64)
    if x.shape[0] != y.shape[0]:
        raise SaywhyError(f"{y.shape[0]} images have attributes but {x.shape[0]} have activations")
    if l2 <= 0:
        raise SaywhyError(f"the attribute model's L2 penalty must be positive, got {l2}")
    if x.shape[0] == 0 or y.shape[1] == 0:
        raise SaywhyError(f"the attribute model needs fitting images and attributes, got {x.shape[0]} images and "
                          f"{y.shape[1]} attributes")
    n, f = x.shape
    t = y.shape[1]
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xs = (x - mean) / std
    base = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
    start = np.concatenate([np.zeros(t * f), np.log(base / (1 - base))])
    scale = 1.0 / (n * t)

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = theta[: t * f].reshape(t, f), theta[t * f:]
        z = xs @ a.T + b
        # BCE with logits: log(1 + e^z) - y z, computed stably.
        loss = scale * float(np.sum(np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(np.sum(a * a))
        residual = scale * (_sigmoid(z) - y)
        grad_a = residual.T @ xs + l2 * a
        return loss, np.concatenate([grad_a.ravel(), residual.sum(axis=0)])

    result = scipy.optimize.minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                                     options={"maxiter": max_iter, "maxcor": 20})
    a, b = result.x[: t * f].reshape(t, f), result.x[t * f:]
    weights = a / std
    return AttributeEvidence(weights, b - weights @ mean)
