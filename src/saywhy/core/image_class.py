"""The image-class attribute p.d.f. p(t|x,c), eq. 5-6, and the class-level p(t|c), eq. 7-8.

    p(t_j | x_i, c_m) = sum_k p(t_j | f_k) * p(f_k | x_i, c_m)    (5)
    p(f_k | x_i, c_m) = sigma(phi(f_k(x_i)) * w_{m,k})            (6)
    p(t_j | c_m)      = sum_k p(t_j | f_k) * p(f_k | c_m)         (7)
    p(f_k | c_m)      = sigma(w_{m,k})                            (8)
"""
from __future__ import annotations

import numpy as np

from saywhy.core.normalization import get_sigma


def filter_given_image_class(pooled: np.ndarray, class_weights: np.ndarray, sigma: str = "l1") -> np.ndarray:
    """Eq. 6 for a batch: row i is p(f|x_i, c_i) with ``class_weights[i]`` = W[c_i].

    >>> filter_given_image_class(np.array([[1.0, 2.0]]), np.array([[3.0, -1.0]])).tolist()
    [[1.0, 0.0]]
    """
    return get_sigma(sigma)(np.asarray(pooled, np.float64) * np.asarray(class_weights, np.float64), axis=1)


def image_class_attribute_pdf(filter_attribute: np.ndarray, pooled: np.ndarray, class_weights: np.ndarray,
                              sigma: str = "l1") -> np.ndarray:
    """Eq. 5: (images x attributes), each row p(t|x_i, c_i)."""
    return filter_given_image_class(pooled, class_weights, sigma) @ filter_attribute


def filter_given_class(weights: np.ndarray, sigma: str = "l1") -> np.ndarray:
    """Eq. 8: p(f|c) = sigma(W[c]) for every class (classes x filters)."""
    return get_sigma(sigma)(np.asarray(weights, np.float64), axis=1)


def class_attribute_pdf(filter_attribute: np.ndarray, weights: np.ndarray, sigma: str = "l1") -> np.ndarray:
    """Eq. 7: (classes x attributes), each row p(t|c)."""
    return filter_given_class(weights, sigma) @ filter_attribute
