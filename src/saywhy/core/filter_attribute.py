"""The filter-attribute p.d.f. p(t|f), eq. 1-4, with images as latent variables.

    p(t_j | f_i) ∝ p(t_j) * p(f_i | t_j)                        (1)
    p(f_i | t_j) = sum_k p(f_i | x_k) * p(x_k | t_j)            (2)
    p(f_i | x_k) = sigma(phi(f_i(x_k)))                         (3)
    p(x_k | t_j) = 1 if t_j in x_k else 0                       (4)

Attribute incidence is sparse: (2) is computed as a sparse-dense product, so the cost
grows with the number of (image, attribute) pairs times filters, never with
images x filters x attributes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from saywhy.core.normalization import get_sigma
from saywhy.errors import SaywhyError

FILTER_SCALES = ("none", "max")


def top_fraction_thresholds(pooled: np.ndarray, fraction: float) -> np.ndarray:
    """Per filter, the activation above which an image is among its ``fraction`` most activating.

    Equal to ``np.quantile(pooled, 1 - fraction, axis=0)`` (linear interpolation), except for
    filters at their floor (below); computed by :class:`TopValues`, which can take the
    images chunk by chunk.

    >>> top_fraction_thresholds(np.arange(10.0)[:, None], 0.2).tolist()
    [7.2]
    >>> bool(top_fraction_thresholds(np.array([[0.0]] * 9 + [[3.0]]), 0.05)[0] > 0)  # zero on 90%: zeros never count
    True
    """
    pooled = np.asarray(pooled)
    top = TopValues(len(pooled), pooled.shape[1], fraction)
    top.add(pooled)
    return top.thresholds()


class TopValues:
    """The exact ``1 - fraction`` quantile per filter over ``n_images`` rows given chunk by chunk.

    ``np.quantile`` at position h = (n - 1)(1 - fraction) needs only the values of ranks
    floor(h) and floor(h) + 1: the ``m = n - floor(h)`` largest values of each filter hold
    both, so only those are kept (a fraction of the data, never all of it), plus the
    smallest value (for filters at their floor). ``merge`` adds another accumulator's
    values (another shard or rank), so the result is the same however the rows are split.
    Uses ``np.partition`` in place, not a sort.
    """

    def __init__(self, n_images: int, n_filters: int, fraction: float, spare: int = 8192):
        if not 0.0 < fraction <= 1.0:
            raise SaywhyError(f"top fraction must be in (0, 1], got {fraction}")
        if n_images < 1:
            raise SaywhyError("top-fraction thresholds need at least one image")
        self.n_images, self.fraction = n_images, fraction
        self.position = (n_images - 1) * (1.0 - fraction)  # as np.quantile's linear method
        self.keep = n_images - int(np.floor(self.position))
        self.spare = max(spare, self.keep // 4)
        # One buffer for the whole run, (filters, keep + spare), allocated on the first chunk: the
        # values are stored NEGATED, so that an in-place partition leaves the largest ``keep`` in
        # the first columns and new chunks are written after them. Nothing is concatenated or
        # copied per chunk: the memory is the buffer (at 1.28M images x 1,280 filters, float32,
        # 0.66 GB), where concatenating held three copies of the kept values at once.
        self._buffer: np.ndarray | None = None
        self._filled = 0
        self.n_filters = n_filters
        self.lowest = np.full(n_filters, np.inf)
        self.seen = 0

    def add(self, pooled: np.ndarray) -> None:
        """Take one chunk (images x filters)."""
        pooled = np.asarray(pooled)
        if not len(pooled):
            return
        self.seen += len(pooled)
        self.lowest = np.minimum(self.lowest, pooled.min(axis=0))
        self._take(pooled.T)

    @classmethod
    def from_kept(cls, n_images: int, fraction: float, kept: np.ndarray, lowest: np.ndarray, seen: int) -> TopValues:
        """An accumulator holding what another one kept (``kept``, ``lowest``, ``seen``), e.g. sent by another rank."""
        top = cls(n_images, len(lowest), fraction)
        top.restore(kept, lowest, seen)
        return top

    def restore(self, kept: np.ndarray, lowest: np.ndarray, seen: int) -> None:
        self._buffer, self._filled = None, 0
        if kept.shape[1]:
            self._take(kept)
        self.lowest, self.seen = np.asarray(lowest, np.float64), int(seen)

    def merge(self, other: TopValues) -> None:
        """Take the values another accumulator kept (from other rows of the same images)."""
        self.seen += other.seen
        self.lowest = np.minimum(self.lowest, other.lowest)
        kept = other.kept
        if kept.shape[1]:
            self._take(kept)

    def _take(self, columns: np.ndarray) -> None:
        """Write ``columns`` (filters x m) into the buffer, partitioning it whenever it is full."""
        if self._buffer is None:
            dtype = columns.dtype if np.issubdtype(columns.dtype, np.floating) else np.dtype(np.float64)
            self._buffer = np.empty((self.n_filters, min(self.keep + self.spare, self.n_images)), dtype)
        capacity, done, width = self._buffer.shape[1], 0, columns.shape[1]
        while done < width:
            if self._filled == capacity:
                self._compact()
                if self._filled == capacity:
                    raise SaywhyError(f"top-fraction thresholds were given more than the {self.n_images} images announced")
            step = min(capacity - self._filled, width - done)
            np.negative(columns[:, done:done + step], out=self._buffer[:, self._filled:self._filled + step],
                        casting="unsafe")
            self._filled += step
            done += step

    def _compact(self) -> None:
        """Keep only the ``keep`` largest values of each filter (the smallest negated), in the first columns."""
        if self._buffer is not None and self._filled > self.keep:
            self._buffer[:, :self._filled].partition(self.keep - 1, axis=1)
            self._filled = self.keep

    @property
    def kept(self) -> np.ndarray:
        """The values kept, (filters x at most ``keep``), in no order (a copy)."""
        if self._buffer is None:
            return np.empty((self.n_filters, 0))
        self._compact()
        return -self._buffer[:, :self._filled]

    def thresholds(self) -> np.ndarray:
        if self.seen != self.n_images:
            raise SaywhyError(f"top-fraction thresholds were given {self.seen} images, expected {self.n_images}")
        self._compact()
        m = self._filled
        if m == 0:
            raise SaywhyError("top-fraction thresholds were given no values")
        # the two smallest kept values (ranks floor(h) and floor(h) + 1) = the two largest negated ones,
        # found by partitioning the buffer in place (no sorted copy of the kept values)
        negated = self._buffer[:, :m]
        if m > 1:
            negated.partition([m - 2, m - 1], axis=1)
        below = -negated[:, m - 1].astype(np.float64)
        above = -negated[:, max(m - 2, 0)].astype(np.float64)
        gamma = self.position - np.floor(self.position)
        # np.quantile's own interpolation on the two values, so the numbers are its numbers.
        thresholds = np.quantile(np.stack([below, above]), gamma, axis=0) if m > 1 else below.copy()
        # A filter at its lowest value (0 after a ReLU) on more than 1 - fraction of the images would
        # get that value as threshold, and every image would count as "top": images at the minimum
        # never count, so such a filter keeps only the images that activate it at all.
        at_floor = thresholds <= self.lowest
        thresholds[at_floor] = np.nextafter(self.lowest[at_floor], np.inf)
        return thresholds


def filter_given_image(pooled: np.ndarray, sigma: str = "l1", filter_scale: str = "none",
                       filter_max: np.ndarray | None = None, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Eq. 3: p(f_i|x_k) = sigma(phi(f_i(x_k))), sigma taken over the filters of each image.

    ``filter_scale="max"`` first divides each filter by its largest pooled activation over
    the fitting images (``filter_max``), so that filters with large activations do not
    dominate every image; the paper does not do this.

    ``sigma="top"`` is a per-filter, non-linear choice: p(f_i|x_k) = 1 when x_k is among
    the filter's most activating fitting images (activation >= ``thresholds[i]``, see
    :func:`top_fraction_thresholds`), else 0. An image then votes only for the filters it
    drives hardest, which keeps attributes common to every image from spreading over
    all filters (the idea behind the paper's Figure 2C "top activation images").

    >>> filter_given_image(np.array([[1.0, 3.0], [2.0, 2.0]])).tolist()
    [[0.25, 0.75], [0.5, 0.5]]
    """
    pooled = np.asarray(pooled, dtype=np.float64)
    if sigma == "top":
        if thresholds is None:
            raise SaywhyError("sigma 'top' needs per-filter thresholds (top_fraction_thresholds)")
        return (pooled >= thresholds).astype(np.float64)
    if filter_scale == "max":
        if filter_max is None:
            filter_max = pooled.max(axis=0)
        pooled = np.divide(pooled, filter_max, out=np.zeros_like(pooled), where=filter_max > 0)
    elif filter_scale != "none":
        raise SaywhyError(f"unknown filter scale {filter_scale!r}: choose one of {', '.join(FILTER_SCALES)}")
    return get_sigma(sigma)(pooled, axis=1)


def attribute_incidence(term_counts: sp.spmatrix) -> sp.csr_matrix:
    """Eq. 4: p(x_k|t_j) as a sparse 0/1 matrix (images x attributes) from term counts."""
    incidence = sp.csr_matrix(term_counts, dtype=np.float64, copy=True)
    incidence.data = (incidence.data > 0).astype(np.float64)
    incidence.eliminate_zeros()
    return incidence


@dataclass
class FilterAttributeStatistics:
    """The sum of eq. 2 over images, p(f|x_k) p(x_k|t), and the counts.

    ``likelihood_sum`` is (attributes x filters); ``attribute_images`` counts the images
    holding each attribute.
    """

    likelihood_sum: np.ndarray
    attribute_images: np.ndarray
    n_images: int

    @classmethod
    def from_chunk(cls, p_filter_given_image: np.ndarray, incidence: sp.spmatrix) -> FilterAttributeStatistics:
        """Eq. 2 on one chunk of images: ``incidence.T @ p(f|x)`` (sparse x dense)."""
        incidence = sp.csr_matrix(incidence)
        if incidence.shape[0] != p_filter_given_image.shape[0]:
            raise SaywhyError(
                f"{incidence.shape[0]} images have attributes but {p_filter_given_image.shape[0]} have activations: "
                "pass the same images, in the same order, to both"
            )
        likelihood = np.asarray(incidence.T @ p_filter_given_image)
        counts = np.asarray(incidence.sum(axis=0)).ravel()
        return cls(likelihood, counts, incidence.shape[0])

    def __add__(self, other: FilterAttributeStatistics) -> FilterAttributeStatistics:
        """The statistics of both sets of images (eq. 2 is a sum over images)."""
        return FilterAttributeStatistics(self.likelihood_sum + other.likelihood_sum,
                                         self.attribute_images + other.attribute_images, self.n_images + other.n_images)


LIKELIHOODS = ("sum", "mean")


def filter_attribute_pdf(stats: FilterAttributeStatistics, prior: np.ndarray, likelihood: str = "sum") -> np.ndarray:
    """Eq. 1: p(t|f) ∝ p(t) p(f|t), normalized over attributes for each filter.

    ``likelihood="sum"`` is the paper's eq. 4 as written (p(x|t) is an indicator, so
    p(f|t) grows with how many images carry t); ``"mean"`` uses p(x|t) = 1/|{x: t in x}|,
    a proper distribution over images, which removes that frequency bias.
    Returns a (filters x attributes) matrix whose rows sum to 1 (a filter no image
    activates keeps a zero row).
    """
    if likelihood == "sum":
        p_f_given_t = stats.likelihood_sum
    elif likelihood == "mean":
        counts = stats.attribute_images[:, None]
        p_f_given_t = np.divide(stats.likelihood_sum, counts, out=np.zeros_like(stats.likelihood_sum), where=counts > 0)
    else:
        raise SaywhyError(f"unknown likelihood {likelihood!r}: choose one of {', '.join(LIKELIHOODS)}")
    if prior.shape[0] != p_f_given_t.shape[0]:
        raise SaywhyError(f"prior has {prior.shape[0]} attributes but the statistics have {p_f_given_t.shape[0]}")
    joint = (prior[:, None] * p_f_given_t).T  # (filters x attributes)
    total = joint.sum(axis=1, keepdims=True)
    return np.divide(joint, total, out=np.zeros_like(joint), where=total > 0)
