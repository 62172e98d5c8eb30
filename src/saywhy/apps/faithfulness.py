"""Faithfulness, which the paper does not measure: do the explained attributes matter?

Remove (zero) the filters that carry an explanation's attributes and measure how much
the explained class's score drops, against removing as many random filters, or the
class's top-weighted filters. The head is linear after global pooling, so zeroing a
filter's map zeroes phi_k exactly and the new logit is z_c - sum_{k in S} phi_k w_c,k:
no second forward pass is needed and the numbers are exact.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from saywhy.core.normalization import softmax

from saywhy.explain.explainer import Explainer


def explanation_filters(explainer: Explainer, pooled: np.ndarray, classes: np.ndarray, n_filters: int) -> np.ndarray:
    """Per image, the ``n_filters`` filters that carry most of its top-k attributes' probability.

    A filter's share in eq. 5 of the explained attributes S is p(f_k|x,c) * sum_{t in S} p(t|f_k)
    (with the evidence model, p(f_k|x,c) times its positive evidence for S).
    """
    pooled = np.atleast_2d(np.asarray(pooled, np.float64))
    log_pdf = explainer.attribute_log_pdf(pooled, classes)
    top = np.argsort(-log_pdf, axis=1, kind="stable")[:, : explainer.config.top_k]
    shares = explainer.filter_shares(pooled, classes, top)  # (images, filters)
    return np.argsort(-shares, axis=1, kind="stable")[:, :n_filters]


@dataclass
class RemovalResult:
    """Mean effect of removing a set of filters of each image, over the images."""

    logit_drop: float
    probability_drop: float
    flipped: float  # share of images whose prediction changes

    def to_dict(self) -> dict[str, float]:
        return {"logit_drop": self.logit_drop, "probability_drop": self.probability_drop, "flipped": self.flipped}


def removal_effect(explainer: Explainer, pooled: np.ndarray, classes: np.ndarray, removed: np.ndarray) -> RemovalResult:
    """Zero the ``removed`` filters of each image (row of indices) and compare the class's score."""
    rows = np.arange(len(pooled))
    before = explainer.decision_function(pooled)
    cut = np.array(pooled[:, :explainer.n_filters_], np.float64, copy=True)  # the head's input (no part pools)
    np.put_along_axis(cut, removed, 0.0, axis=1)
    after = explainer.decision_function(cut)
    return RemovalResult(
        logit_drop=float(np.mean(before[rows, classes] - after[rows, classes])),
        probability_drop=float(np.mean(softmax(before, axis=1)[rows, classes] - softmax(after, axis=1)[rows, classes])),
        flipped=float(np.mean(after.argmax(axis=1) != classes)),
    )


def faithfulness(explainer: Explainer, pooled: np.ndarray, classes: np.ndarray | None = None,
                 sizes: Sequence[int] = (5, 10, 20), seed: int = 0, random_draws: int = 10) -> dict[str, dict]:
    """Score drops when removing explanation filters, random filters and top-weighted filters.

    Keys are the number of filters removed; random filters are averaged over ``random_draws``.
    """
    pooled = np.atleast_2d(np.asarray(pooled, np.float64))
    classes = explainer.predict(pooled) if classes is None else np.asarray(classes)
    rng = np.random.default_rng(seed)
    n_images, n_total = len(pooled), explainer.n_filters_
    results: dict[str, dict] = {}
    for size in sizes:
        size = min(size, n_total)
        draws = [removal_effect(explainer, pooled, classes,
                                np.stack([rng.choice(n_total, size, replace=False) for _ in range(n_images)]))
                 for _ in range(random_draws)]
        random_mean = RemovalResult(*(float(np.mean([getattr(d, f) for d in draws]))
                                      for f in ("logit_drop", "probability_drop", "flipped")))
        top_weighted = np.argsort(-explainer.head_weights_[classes], axis=1, kind="stable")[:, :size]
        results[str(size)] = {
            "explanation filters": removal_effect(
                explainer, pooled, classes, explanation_filters(explainer, pooled, classes, size)).to_dict(),
            "random filters": random_mean.to_dict(),
            "class's top-weighted filters": removal_effect(explainer, pooled, classes, top_weighted).to_dict(),
        }
    return results
