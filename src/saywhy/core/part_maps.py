"""Part-aware weights learned from training keypoints: where each part is, and whether it shows.

Eq. 9 lays an attribute's alpha over the final maps f(x); with same-colour attributes of
different parts sharing most of their alpha ("red crown" and "red breast" are both mostly
"a red bird"), their maps peak together. Datasets with part annotations (CUB's keypoints)
say where each part is on the training images, so a part's location can be learned on the
same maps eq. 9 uses:

- *where*: per part p, a logistic model over the F filters of one map cell,
  ``s_p(x, cell) = w_p . f(x, cell) + b_p``, fitted on the cells of training images: the cell
  holding a visible keypoint of p is a positive, every other cell of an image that annotates p
  a negative (:meth:`PartMaps.part_scores` gives the (P, h, w) log-odds maps);
- *whether*: per part p, a logistic model over the pooled activations phi(x) (the spatial mean
  of the same maps) with the image's visibility label of p (:meth:`PartMaps.visibility`); or,
  with no further fit, the location map's peak (:meth:`PartMaps.peak_visibility`): a part shows
  when some cell looks like it, a max-type question that the mean dilutes for a small part.

Both are L2-penalized logistic regressions on standardized inputs, solved by L-BFGS, with
the standardization folded back so that the weights apply to raw maps. A part with no
positive (or, for visibility, only one label) keeps zero weights and the bias of its base rate.
Pure numpy/scipy: arrays in, arrays out.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from saywhy.core.logistic import sigmoid, softplus
from saywhy.errors import SaywhyError

NOT_ANNOTATED = -1  # a part the image does not annotate (no keypoint line, or no keypoints at all)
PART_GROUNDINGS = ("none", "maps", "maps_alpha")  # how :func:`part_grounding_scores` uses the part maps


def standardized_maps(scores: np.ndarray) -> np.ndarray:
    """Each (h, w) map of a (..., h, w) stack minus its mean, over its standard deviation (a flat map stays 0)."""
    scores = np.asarray(scores, np.float64)
    flat = scores.reshape(*scores.shape[:-2], -1)
    std = flat.std(axis=-1, keepdims=True)
    return ((flat - flat.mean(axis=-1, keepdims=True)) / np.where(std > 0, std, 1.0)).reshape(scores.shape)


def part_grounding_scores(alpha_scores: np.ndarray, part_scores: np.ndarray, known: np.ndarray, mode: str) -> np.ndarray:
    """(T, h, w) grounding scores (or (N, T, h, w) for N images): eq. 9's ``alpha_scores`` where ``known``
    (T,) is False or ``mode`` is "none";
    else the part's log-odds map ("maps") or the sum of both maps, each standardized over its cells
    ("maps_alpha": the attribute's own evidence picks among the places its part may be).

    >>> a = np.array([[[0.0, 1.0]], [[1.0, 0.0]]]); p = np.array([[[1.0, 0.0]], [[0.0, 0.0]]])
    >>> part_grounding_scores(a, p, np.array([True, False]), "maps")[:, 0].tolist()
    [[1.0, 0.0], [1.0, 0.0]]
    """
    if mode not in PART_GROUNDINGS:
        raise SaywhyError(f"unknown part grounding {mode!r}: choose one of {', '.join(PART_GROUNDINGS)}")
    alpha_scores = np.asarray(alpha_scores, np.float64)
    if mode == "none" or not np.any(known):
        return alpha_scores
    combined = part_scores if mode == "maps" else standardized_maps(part_scores) + standardized_maps(alpha_scores)
    return np.where(np.asarray(known)[:, None, None], combined, alpha_scores)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, sample_weight: np.ndarray | None = None,
                 max_iter: int = 200) -> tuple[np.ndarray, float]:
    """L2-penalized logistic regression (weights, bias) on raw ``x``: minimizes the weighted mean
    cross-entropy + ``l2``/2 ||w||^2 on standardized columns, then folds the scaling back.

    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> w, b = fit_logistic(x, y, 1e-3)
    >>> bool(sigmoid(x @ w + b)[3] > 0.9 > 0.1 > sigmoid(x @ w + b)[0])
    True
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    if not sw.sum() > 0:
        raise SaywhyError("logistic fit: the sample weights sum to zero")
    sw = sw / sw.sum()
    mean = sw @ x
    std = np.sqrt(np.maximum(sw @ (x - mean) ** 2, 0.0))
    # a column constant up to rounding carries no information: dividing by its rounding noise
    # would blow its weight up (to inf when folded back), so it is held at weight 0
    constant = std <= 1e-7 * np.maximum(np.abs(mean), 1.0)
    std[constant] = 1.0
    z = (x - mean) / std
    z[:, constant] = 0.0
    rate = float(np.clip(sw @ y, 1e-6, 1 - 1e-6))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        logit = z @ w + b
        # log(1 + e^l) - y l, stably
        value = sw @ (softplus(logit) - y * logit) + 0.5 * l2 * w @ w
        residual = sw * (sigmoid(logit) - y)
        return float(value), np.append(z.T @ residual + l2 * w, residual.sum())

    import scipy.optimize  # here, not at import: explaining with fitted part maps needs no optimizer

    start = np.append(np.zeros(x.shape[1]), math.log(rate / (1 - rate)))
    solved = scipy.optimize.minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    w, b = solved.x[:-1] / std, float(solved.x[-1] - (solved.x[:-1] / std) @ mean)
    return w, b


def fit_logistics(x: np.ndarray, y: np.ndarray, l2: float, sample_weight: np.ndarray, max_iter: int = 200,
                  chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """P L2-penalized logistic regressions on the same rows at once: (weights (P, F), biases (P,)).

    Column p of ``y`` and ``sample_weight`` (both (N, P)) defines regression p, with exactly
    :func:`fit_logistic`'s objective (its weighted standardization, penalty and constant
    columns held at 0), so each part's optimum is the one it would have alone. The standardization
    is folded into the weights instead of materialized, so the (N, F) rows are read in their own
    dtype (float32 maps: half the bytes) by two matrix products per evaluation for all P
    regressions, rather than two matrix-vector products per regression over a standardized
    float64 copy each. The statistics are accumulated in float64, ``chunk`` rows at a time.

    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([[0, 1], [0, 1], [1, 0], [1, 0]])
    >>> w, b = fit_logistics(x, y, 1e-3, np.ones((4, 2)))
    >>> bool(w[0, 0] > 0 > w[1, 0])
    True
    """
    import scipy.optimize  # here, not at import: explaining with fitted part maps needs no optimizer

    y = np.asarray(y, np.float64)
    sw = np.asarray(sample_weight, np.float64)
    n, f = x.shape
    p = y.shape[1]
    if y.shape != (n, p) or sw.shape != (n, p):
        raise SaywhyError(f"logistic fits: {n} rows need labels and weights of shape {(n, p)}, got {y.shape}, {sw.shape}")
    total = sw.sum(axis=0)
    if not (total > 0).all():
        raise SaywhyError("logistic fit: the sample weights sum to zero")
    sw = sw / total
    mean, square = np.zeros((p, f)), np.zeros((p, f))
    for start in range(0, n, chunk):
        rows = np.asarray(x[start:start + chunk], np.float64)
        mean += sw[start:start + chunk].T @ rows
        square += sw[start:start + chunk].T @ (rows * rows)
    std = np.sqrt(np.maximum(square - mean * mean, 0.0))
    constant = std <= 1e-7 * np.maximum(np.abs(mean), 1.0)  # as in fit_logistic: held at weight 0
    std[constant] = 1.0
    free = ~constant
    rate = np.clip((sw * y).sum(axis=0), 1e-6, 1 - 1e-6)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:p * f].reshape(p, f) * free, theta[p * f:]
        v = w / std  # (P, F): weights on the raw columns
        logit = np.asarray(x @ v.T.astype(dtype), np.float64) + (b - (v * mean).sum(axis=1))
        value = float((sw * (softplus(logit) - y * logit)).sum() + 0.5 * l2 * (w * w).sum())
        residual = sw * (sigmoid(logit) - y)  # (N, P)
        summed = residual.sum(axis=0)
        raw = np.asarray(residual.T.astype(dtype) @ x, np.float64)  # (P, F): x.T @ residual, per regression
        grad_w = ((raw - mean * summed[:, None]) / std + l2 * w) * free
        return value, np.concatenate([grad_w.ravel(), summed])

    start = np.concatenate([np.zeros(p * f), np.log(rate / (1 - rate))])
    solved = scipy.optimize.minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    w = solved.x[:p * f].reshape(p, f) * free
    return w / std, solved.x[p * f:] - (w / std * mean).sum(axis=1)


class PartMaps:
    """Per part, where it is on the final maps and how likely it shows, learned from training keypoints.

    ``l2``: the L2 penalty of both logistic fits (on standardized filters); ``positive_weight``:
    the total weight of the positive cells relative to the negative cells of the location fit
    (1: as many as all negatives together, so a rare cell still counts); ``max_iter``: L-BFGS
    iterations per part.

    >>> maps = np.zeros((4, 2, 3, 3)); maps[:, 0, 1, 2] = 1.0     # filter 0 fires at cell (1, 2)
    >>> cells = np.full((4, 1, 2), 1); cells[..., 1] = 2          # the part is at (1, 2) in each image
    >>> pm = PartMaps().fit(maps, cells, np.ones((4, 1), int), ["crown"])
    >>> tuple(int(v) for v in np.unravel_index(pm.part_scores(maps[0])[0].argmax(), (3, 3)))
    (1, 2)
    """

    def __init__(self, l2: float = 1e-2, positive_weight: float = 1.0, max_iter: int = 200):
        for name, value in (("l2", l2), ("positive weight", positive_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise SaywhyError(f"part maps' {name} must be a finite number above 0, got {value!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
            raise SaywhyError(f"part maps' max_iter must be a whole number of at least 1, got {max_iter!r}")
        self.l2, self.positive_weight, self.max_iter = float(l2), float(positive_weight), int(max_iter)

    def fit(self, maps: np.ndarray, cells: np.ndarray, visible: np.ndarray, parts: list[str]) -> PartMaps:
        """Fit from ``maps`` (N, F, h, w), the final maps of N training images; ``cells`` (N, P, 2) the
        (row, col) map cell of each part's keypoint (any value where it is not visible);
        ``visible`` (N, P): 1 visible, 0 annotated hidden, :data:`NOT_ANNOTATED` (-1) unknown."""
        maps = np.asarray(maps, np.float32)
        cells, visible = np.asarray(cells), np.asarray(visible)
        if maps.ndim != 4:
            raise SaywhyError(f"part maps need (images, filters, h, w) maps, got shape {maps.shape}")
        n, f, h, w = maps.shape
        if visible.shape != (n, len(parts)) or cells.shape != (n, len(parts), 2):
            raise SaywhyError(f"part maps: {n} images and {len(parts)} parts need cells of shape {(n, len(parts), 2)} "
                              f"and visibility {(n, len(parts))}, got {cells.shape} and {visible.shape}")
        if not np.isfinite(maps).all():
            raise SaywhyError("the training images' maps contain NaN or infinite numbers: check the network")
        flat = maps.transpose(0, 2, 3, 1).reshape(n * h * w, f)  # one row per cell, image-major
        pooled = maps.mean(axis=(2, 3), dtype=np.float64)
        self.location_weights_, self.location_bias_ = np.zeros((len(parts), f)), np.zeros(len(parts))
        self.visibility_weights_, self.visibility_bias_ = np.zeros((len(parts), f)), np.zeros(len(parts))
        self.positives_ = np.zeros(len(parts), np.int64)
        located, labels, weights = [], [], []  # the parts with a location to learn, fitted together
        for p in range(len(parts)):
            annotated = visible[:, p] != NOT_ANNOTATED
            shown = annotated & (visible[:, p] == 1)
            self.positives_[p] = int(shown.sum())
            if shown.any():
                label = np.zeros(n * h * w)
                r = np.clip(cells[shown, p, 0].astype(int), 0, h - 1)
                c = np.clip(cells[shown, p, 1].astype(int), 0, w - 1)
                label[np.flatnonzero(shown) * h * w + r * w + c] = 1.0
                rows = np.repeat(annotated, h * w)  # the cells of the images that annotate p
                positives, count = label.sum(), rows.sum()
                if positives < count:  # with one cell per map (or every cell a keypoint) there is nothing to tell apart
                    located.append(p)
                    labels.append(label)
                    weights.append(np.where(label > 0, self.positive_weight * (count - positives) / positives, 1.0) * rows)
        if located:
            self.location_weights_[located], self.location_bias_[located] = fit_logistics(
                flat, np.stack(labels, axis=1), self.l2, np.stack(weights, axis=1), self.max_iter)
        for p in range(len(parts)):
            annotated = visible[:, p] != NOT_ANNOTATED
            labels = visible[annotated, p]
            rate = float(np.clip(labels.mean(), 1e-3, 1 - 1e-3)) if len(labels) else 0.5
            self.visibility_bias_[p] = math.log(rate / (1 - rate))
            if len(labels) and 0 < labels.sum() < len(labels):
                self.visibility_weights_[p], self.visibility_bias_[p] = fit_logistic(
                    pooled[annotated], labels, self.l2, None, self.max_iter)
        self.parts_ = list(parts)
        for name in ("location_weights_", "location_bias_", "visibility_weights_", "visibility_bias_"):
            if not np.isfinite(getattr(self, name)).all():
                raise SaywhyError("the part maps' fit diverged (non-finite weights): raise the L2 penalty")
        return self

    def _check(self) -> None:
        if not hasattr(self, "location_weights_"):
            raise SaywhyError("these part maps are not fitted: call fit() first")

    def part_scores(self, maps: np.ndarray, parts: Sequence[int] | None = None) -> np.ndarray:
        """Log-odds that each cell holds each part: (P, h, w) for one image's (F, h, w) maps, or
        (N, P, h, w) for (N, F, h, w); ``parts``: only these part indices, in this order. float32 maps
        are multiplied in float32 (no float64 copy of them), others in float64."""
        self._check()
        maps = np.asarray(maps)
        maps = maps if maps.dtype == np.float32 else np.asarray(maps, np.float64)
        if maps.shape[-3] != self.location_weights_.shape[1]:
            raise SaywhyError(f"maps have {maps.shape[-3]} filters but the part maps {self.location_weights_.shape[1]}")
        rows = slice(None) if parts is None else list(parts)
        weights, bias = self.location_weights_[rows].astype(maps.dtype), self.location_bias_[rows]
        *lead, f, h, w = maps.shape
        scores = weights @ maps.reshape(*lead, f, h * w)  # one matrix product (einsum's loop was 2x slower)
        return scores.reshape(*lead, len(bias), h, w) + bias[:, None, None]

    def peak_log_odds(self, maps: np.ndarray) -> np.ndarray:
        """(N, P): each part's largest cell log-odds over the (N, F, h, w) ``maps`` (:meth:`part_scores`)."""
        maps = np.asarray(maps, np.float64)
        if maps.ndim != 4:
            raise SaywhyError(f"a part's peak needs (images, filters, h, w) maps, got shape {maps.shape}")
        return self.part_scores(maps).reshape(len(maps), len(self.location_bias_), -1).max(axis=2)

    def peak_visibility(self, peaks: np.ndarray) -> np.ndarray:
        """(N, P): the probability that each part shows, read from its location map's peak
        (:meth:`peak_log_odds`): the sigmoid of the most part-like cell's log-odds. The location fit
        weighs a part's cells as much as all other cells together, so this is the chance that cell
        holds the part at even prior odds. A part without a location fit (no visible keypoint, or a
        single-cell map) has no peak to read: it reads as visible.

        >>> maps = np.zeros((4, 2, 3, 3)); maps[:, 0, 1, 2] = 1.0; cells = np.full((4, 1, 2), 1); cells[..., 1] = 2
        >>> pm = PartMaps().fit(maps, cells, np.ones((4, 1), int), ["crown"])
        >>> empty = np.zeros((1, 2, 3, 3))                               # filter 0 fires nowhere: no crown
        >>> bool(pm.peak_visibility(pm.peak_log_odds(maps[:1]))[0, 0] > 0.5 > pm.peak_visibility(pm.peak_log_odds(empty))[0, 0])
        True
        """
        self._check()
        peaks = np.atleast_2d(np.asarray(peaks, np.float64))
        if peaks.shape[1] != len(self.location_bias_):
            raise SaywhyError(f"peaks of {peaks.shape[1]} parts for part maps of {len(self.location_bias_)}")
        with np.errstate(over="ignore", invalid="ignore"):
            out = sigmoid(peaks)
        located = np.abs(self.location_weights_).sum(axis=1) > 0
        return np.where(located, out, 1.0)

    def visibility(self, pooled: np.ndarray) -> np.ndarray:
        """(N, P): the probability that each part shows in each image, from its pooled activations."""
        self._check()
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        if pooled.shape[1] != self.visibility_weights_.shape[1]:
            raise SaywhyError(f"activations have {pooled.shape[1]} filters but the part maps "
                              f"{self.visibility_weights_.shape[1]}")
        with np.errstate(over="ignore", invalid="ignore"):
            return sigmoid(pooled @ self.visibility_weights_.T + self.visibility_bias_)

    def arrays(self) -> dict[str, np.ndarray]:
        self._check()
        return {"part_map_weights": self.location_weights_, "part_map_bias": self.location_bias_,
                "part_visibility_weights": self.visibility_weights_, "part_visibility_bias": self.visibility_bias_,
                "part_map_positives": self.positives_.astype(np.float64)}

    def load_arrays(self, arrays: dict[str, np.ndarray], parts: list[str]) -> PartMaps:
        p = len(parts)
        self.location_weights_, self.location_bias_ = np.asarray(arrays["part_map_weights"]), np.asarray(arrays["part_map_bias"])
        self.visibility_weights_ = np.asarray(arrays["part_visibility_weights"])
        self.visibility_bias_ = np.asarray(arrays["part_visibility_bias"])
        self.positives_ = np.asarray(arrays["part_map_positives"]).astype(np.int64)
        f = self.location_weights_.shape[-1]
        for name, shape in (("location_weights_", (p, f)), ("location_bias_", (p,)), ("visibility_weights_", (p, f)),
                            ("visibility_bias_", (p,)), ("positives_", (p,))):
            if getattr(self, name).shape != shape:
                raise SaywhyError(f"part map array {name} has shape {getattr(self, name).shape}, expected {shape}: refit it")
        self.parts_ = list(parts)
        return self
