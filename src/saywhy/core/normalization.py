"""The normalization function sigma of eq. 3, 6, 8 and 9, as named choices.

The paper writes sigma everywhere and never says what it is. Each choice below maps a
vector of real scores to non-negative weights that sum to one along ``axis``:

- ``"l1"`` (default): clip negatives to 0, divide by the sum. Keeps ratios between
  scores, so a filter twice as active gets twice the weight; a negative class weight
  (a filter voting against the class) gets none. Scale-free.
- ``"softmax"``: exp(s - max) / sum. Never zero, but depends on the scale of the
  scores (pooled activations of different networks differ by orders of magnitude).
- ``"minmax"``: (s - min) / (max - min), then divided by the sum: the lowest score
  gets 0 weight even when positive.
- ``"identity"``: clip negatives only, no division; for unnormalized, additive sums
  (the paper's Figure 5 shows such "unnormalized" p.d.f.s).

A row whose weights are all zero stays all zero (it carries no evidence) instead of
becoming NaN.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from saywhy.errors import SaywhyError

Sigma = Callable[..., np.ndarray]


def _divide_by_sum(x: np.ndarray, axis: int) -> np.ndarray:
    total = x.sum(axis=axis, keepdims=True)
    return np.divide(x, total, out=np.zeros_like(x), where=total > 0)


def l1(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """
    >>> l1(np.array([2.0, -1.0, 6.0]))
    array([0.25, 0.  , 0.75])
    """
    return _divide_by_sum(np.maximum(np.asarray(scores, dtype=np.float64), 0.0), axis)


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """
    >>> softmax(np.array([0.0, 0.0])).tolist()
    [0.5, 0.5]
    """
    scores = np.asarray(scores, dtype=np.float64)
    e = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def minmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """
    >>> minmax(np.array([1.0, 2.0, 3.0])).tolist()
    [0.0, 0.3333333333333333, 0.6666666666666666]
    """
    scores = np.asarray(scores, dtype=np.float64)
    low, high = scores.min(axis=axis, keepdims=True), scores.max(axis=axis, keepdims=True)
    span = high - low
    shifted = np.divide(scores - low, span, out=np.zeros_like(scores), where=span > 0)
    return _divide_by_sum(shifted, axis)


def identity(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """
    >>> identity(np.array([-1.0, 3.0])).tolist()
    [0.0, 3.0]
    """
    return np.maximum(np.asarray(scores, dtype=np.float64), 0.0)


SIGMAS: dict[str, Sigma] = {"l1": l1, "softmax": softmax, "minmax": minmax, "identity": identity}


def get_sigma(name: str) -> Sigma:
    """The sigma called ``name``; an unknown name lists the choices."""
    try:
        return SIGMAS[name]
    except KeyError:
        raise SaywhyError(f"unknown normalization {name!r}: choose one of {', '.join(SIGMAS)}") from None
