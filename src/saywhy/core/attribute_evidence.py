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

Everything here is arrays in, arrays out. The fit is iterative, but each of its loss and
gradient evaluations is a sum over images: it reads the data as row chunks (from memory,
disk, or generated), so shards and ranks can each compute their part
(``EvidenceLoss``), and nothing images x attributes wide is ever built. Attributes are
fitted in blocks of ``BLOCK``, each its own L-BFGS problem with a bounded history.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from saywhy.core.logistic import sigmoid, softplus
from saywhy.errors import SaywhyError

# Each attribute's L2 on standardized activations, chosen on a validation split of the training
# images (benchmarks/choose_evidence_l2.py, BENCHMARKS.md "Fit at scale"): the lowest held-out
# cross-entropy relative to each dataset's best, averaged over synthbirds and cub50, among the
# values measured on both (0.01, 0.03, 0.1, 0.3: 1.222, 1.108, 1.044, 1.048). Before issue 13 the loss was divided by the vocabulary
# size too, so 1e-3 meant 1e-3 x 233 on synthbirds and 1e-3 x 1,180 on cub50.
EVIDENCE_L2 = 0.1
# ExplainerConfig's default: the penalty per vocabulary term (EvidenceModel multiplies it by the
# vocabulary's size), the scale at which 1e-3 was chosen on held-out training images.
EVIDENCE_L2_PER_TERM = 1e-3


@dataclass
class AttributeEvidence:
    """Fitted logistic models, one per attribute: ``weights`` (T x F) on raw pooled activations, ``bias`` (T).

    ``sources`` (T,), with part pooling (:mod:`saywhy.core.part_pooling`): -1 where attribute t
    reads the global pool phi(x), g where it reads part group g's pool psi_g(x); None: all global.
    The methods take ``parts`` (images x groups x filters), the part pools, wherever a source is not -1.
    ``global_weights`` (T x F), with ``evidence_pooling="both"``: weights on phi(x) added to a part
    attribute's logit (its ``weights`` row applies to its part pool); None: no such term.
    """

    weights: np.ndarray
    bias: np.ndarray
    sources: np.ndarray | None = None
    global_weights: np.ndarray | None = None
    _single: tuple | None = field(default=None, init=False, repr=False, compare=False)  # float32 copies, made once
    _layouts: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # see _layout

    def _parted(self) -> bool:
        return self.sources is not None and bool((self.sources >= 0).any())

    def _inputs(self, pooled: np.ndarray, parts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        if pooled.shape[1] != self.weights.shape[1]:
            raise SaywhyError(f"activations have {pooled.shape[1]} filters but the attribute model {self.weights.shape[1]}")
        if not self._parted():
            return pooled, None
        if parts is None:
            raise SaywhyError("this attribute model reads part-pooled activations: give the maps' part pools too")
        parts = np.asarray(parts, np.float64)
        if parts.ndim == 2:  # (images, G x F) side by side; G from the width, so that no image is no error
            parts = parts.reshape(len(pooled), parts.shape[1] // pooled.shape[1], pooled.shape[1])
        if parts.shape[1] <= int(self.sources.max()):
            raise SaywhyError(f"the attribute model reads {int(self.sources.max()) + 1} part pools, got {parts.shape[1]}")
        return pooled, parts

    def logits(self, pooled: np.ndarray, filter_weights: np.ndarray | None = None,
               parts: np.ndarray | None = None, single: bool = False) -> np.ndarray:
        """(images x attributes) log-odds; with ``filter_weights`` (images x filters), p(f|x,c) of eq. 6,
        each filter's evidence is weighted by F * p(f_k|x,c) (eq. 5 in log-odds).

        ``single``: the products in float32 (the result is float64), for ranking only: reading
        half the bytes of the (attributes x filters) weights is what one image's scores cost
        (cub50's 1,094 x 1,280 weights: 0.53 ms cold in float64, 0.21 ms in float32). The
        order differs only where two attributes' log-odds agree to about 1e-6 of their size.
        """
        pooled, parts = self._inputs(pooled, parts)
        scale = None if filter_weights is None else pooled.shape[1] * np.asarray(filter_weights, np.float64)
        x = pooled if scale is None else pooled * scale
        if parts is None:
            return _product(x, self._weights_in(single)[0], single) + self.bias
        on_phi, blocks = self._layout(single)
        out = _product(x, on_phi, single) + self.bias
        for g, js, block in blocks:
            out[:, js] += _product(parts[:, g] if scale is None else parts[:, g] * scale, block, single)
        return out

    def _layout(self, single: bool) -> tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]:
        """The weights as part pooling reads them, made once (per precision): (T x F) weights on phi(x) (a
        part-attribute's global weights, zero without them) and per part group g its attributes and their
        contiguous (T_g x F) weights on psi_g(x). Gathering the rows per call copied 4.8 MB for one
        cub50 image."""
        if single not in self._layouts:
            weights, global_weights = self._weights_in(single)
            part = self.sources >= 0
            on_phi = weights.copy()
            on_phi[part] = 0.0 if global_weights is None else global_weights[part]
            blocks = [(int(g), js, np.ascontiguousarray(weights[js]))
                      for g in np.unique(self.sources[part]) for js in [np.flatnonzero(self.sources == g)]]
            self._layouts[single] = (on_phi, blocks)
        return self._layouts[single]

    def _weights_in(self, single: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The weights (and global weights), as float32 copies made once for ``single``."""
        if not single:
            return self.weights, self.global_weights
        if self._single is None:
            self._single = (self.weights.astype(np.float32),
                            None if self.global_weights is None else self.global_weights.astype(np.float32))
        return self._single

    def probability(self, pooled: np.ndarray, filter_weights: np.ndarray | None = None,
                    parts: np.ndarray | None = None) -> np.ndarray:
        """p(t|x), or p(t|x,c) with ``filter_weights`` = p(f|x,c)."""
        return sigmoid(self.logits(pooled, filter_weights, parts))

    def logits_at(self, pooled: np.ndarray, rows: np.ndarray, columns: np.ndarray,
                  filter_weights: np.ndarray | None = None, parts: np.ndarray | None = None) -> np.ndarray:
        """:meth:`logits` of image ``rows[i]`` and attribute ``columns[i]`` for each i, in float64: the
        same numbers as ``logits(...)[rows, columns]`` without scoring every attribute."""
        pooled, parts = self._inputs(pooled, parts)
        rows, columns = np.asarray(rows, dtype=np.intp), np.asarray(columns, dtype=np.intp)
        scale = None if filter_weights is None else pooled.shape[1] * np.asarray(filter_weights, np.float64)[rows]
        x = pooled[rows] if scale is None else pooled[rows] * scale
        logits = self.bias[columns].astype(np.float64)
        if parts is not None:
            source = self.sources[columns]
            if self.global_weights is not None:
                logits = logits + np.where(source >= 0, np.einsum("nf,nf->n", x, self.global_weights[columns]), 0.0)
            part = parts[rows, np.maximum(source, 0)]
            x = np.where((source >= 0)[:, None], part if scale is None else part * scale, x)
        return np.einsum("nf,nf->n", x, self.weights[columns]) + logits

    def part_logits(self, parts: np.ndarray) -> np.ndarray:
        """(images x attributes): each part-attribute's evidence from its part group's pool in ``parts``
        (images x groups x filters), sum_k a_tk psi_g,k; NaN for attributes that read no part pool."""
        out = np.full((len(parts), len(self.bias)), np.nan)
        if self._parted():
            parts = np.asarray(parts, np.float64)
            for g, js, block in self._layout(False)[1]:
                out[:, js] = parts[:, g] @ block.T
        return out

    def part_logits_at(self, parts: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """:meth:`part_logits` of image ``rows[i]`` and attribute ``columns[i]`` for each i: the same numbers
        without scoring every attribute."""
        rows, columns = np.asarray(rows, dtype=np.intp), np.asarray(columns, dtype=np.intp)
        out = np.full(len(rows), np.nan)
        if self._parted():
            source = self.sources[columns]
            pairs = np.flatnonzero(source >= 0)
            out[pairs] = np.einsum("nf,nf->n", np.asarray(parts, np.float64)[rows[pairs], source[pairs]],
                                   self.weights[columns[pairs]])
        return out

    def probability_at(self, pooled: np.ndarray, rows: np.ndarray, columns: np.ndarray,
                       parts: np.ndarray | None = None) -> np.ndarray:
        """p(t|x) of image ``rows[i]`` and attribute ``columns[i]`` for each i: the same numbers as
        ``probability(pooled)[rows, columns]`` without scoring every attribute."""
        return sigmoid(self.logits_at(pooled, rows, columns, parts=parts))

    def filter_evidence(self, pooled: np.ndarray, attributes: np.ndarray) -> np.ndarray:
        """(images x filters): each filter's positive evidence a_tk phi_k(x), summed over the given
        attribute indices (one row of indices per image); read on the global pool phi(x)."""
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        summed = self.weights[np.asarray(attributes)].clip(min=0.0).sum(axis=1)  # (images, filters)
        return pooled * summed


def _product(x: np.ndarray, weights: np.ndarray, single: bool) -> np.ndarray:
    """x @ weights.T in float64, computed in float32 when ``single`` (``weights`` is float32 then)."""
    if not single:
        return x @ weights.T
    return (x.astype(np.float32) @ weights.T).astype(np.float64)


Chunks = Callable[[], Iterable[tuple[np.ndarray, sp.csr_matrix]]]
"""A re-iterable source of (pooled activations, attribute incidence) row chunks of the same images."""

# Attributes per L-BFGS problem: the history and the chunk temporaries stay this wide. A block
# runs until its slowest attribute meets the stopping rule, each iteration a product as wide as
# the block: on cub50 (1,499 x 1,280 x 1,094) blocks of 1024 took 111 evaluations of about 0.2 s
# (21 s), blocks of 256 the same 111 passes over the data in five blocks (5.2 s), blocks of 64
# 233 passes (3.1 s). Validation figures of the default explainer (choose_defaults.py
# --part-pooling, BENCHMARKS.md) were the same at 1024, 256 and 64 (mAP 47.77 / 47.74 / 47.74,
# invisible share 1.00% each, occlusion 79.2 / 79.6 / 79.6%): 256 costs a streamed fit no more
# passes than 1024 did.
BLOCK = 256
CHUNK_ROWS = 4096  # images per chunk for in-memory data
HISTORY = 10  # L-BFGS corrections kept per block
# Stop when every entry of a block's projected gradient (per attribute: mean over images) is
# below this. Measured on a held-out 20% of 1,500 synthetic images x 256 filters x 1,024
# attributes (benchmarks/fit_scale.synthetic, l2 0.03): 1e-5 ran into the 300-iteration cap
# (83 s CPU, held-out cross-entropy 0.04147), 1e-4 took 145 iterations (39 s, 0.04115), 1e-3
# 25 iterations (6.5 s, 0.04076; fitted probabilities within 0.017 of the 1e-5 fit's): the
# last steps only fit the training images harder. Below 1e-5, a float32 loss's line search
# also fails on rounding and spends tens of evaluations for nothing (87 instead of 11).
TOLERANCE = 1e-3
# Standardized rows (and, with smoothing, the block's drawn targets) kept between evaluations up to
# this many bytes, in chunk order; chunks past it are standardized again on every evaluation, so a
# streamed fit's memory stays bounded. L-BFGS evaluates a block tens of times: on cub50's part refit
# (1,499 x 2,560 pools, about 40 attributes per part) standardizing was nearly half of an evaluation.
KEEP_BYTES = 256 * 2**20


Reduce = Callable[[np.ndarray], np.ndarray]
"""Adds up a float64 array over shards or ranks (an all-reduce); the identity for one process."""


def _alone(array: np.ndarray) -> np.ndarray:
    return array


@dataclass
class EvidenceMoments:
    """What the fit needs before it starts, from sums over images: ``n`` images, per filter the
    ``mean`` and ``std`` of phi, per attribute ``present`` (images holding it)."""

    n: int
    mean: np.ndarray
    std: np.ndarray
    present: np.ndarray


def chunk_moments(chunks: Chunks, n_filters: int, n_attributes: int, reduce: Reduce = _alone) -> EvidenceMoments:
    """:class:`EvidenceMoments` in two passes of sums (totals, then squares about the mean), each
    added up by ``reduce`` across shards or ranks (a rank may hold no image)."""
    sums = np.zeros(1 + n_filters + n_attributes)
    for x, y in chunks():
        x = np.asarray(x, np.float64)
        sums[0] += len(x)
        sums[1:1 + n_filters] += x.sum(axis=0)
        sums[1 + n_filters:] += np.asarray((sp.csr_matrix(y) > 0).sum(axis=0), np.float64).ravel()
    sums = reduce(sums)
    n = int(sums[0])
    if n == 0:
        raise SaywhyError("the evidence model needs at least one image")
    mean = sums[1:1 + n_filters] / n
    squares = np.zeros(n_filters)
    for x, _ in chunks():
        squares += ((np.asarray(x, np.float64) - mean) ** 2).sum(axis=0)
    squares = reduce(squares)
    return EvidenceMoments(n, mean, np.sqrt(squares / n) + 1e-6, sums[1 + n_filters:])


@dataclass
class ClassSmoothing:
    """Targets drawn toward the class (``ExplainerConfig.evidence_smoothing``): an image's target for t
    is ``(1 - share) y_it + share frequency[c_i, t]``, with y the caption incidence (0/1), c_i the
    class the head (``weights``, ``bias``, applied to the loss's activations) predicts for the
    image, or ``classes[i]`` where given (row i of the loss's images, for a fit whose inputs are not
    the head's), and ``frequency`` (classes x the loss's attribute columns) the share of the
    fitting images of each predicted class whose captions name t.

    Ten captions per image say little about whether an annotator would name a given attribute;
    the fifty or so images of a class say it far better. The model still reads only the image:
    the class enters the targets of the fit, never the inputs of an explanation.
    """

    share: float
    frequency: np.ndarray
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    classes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.share < 1.0:
            raise SaywhyError(f"the evidence smoothing share must be in [0, 1), got {self.share}")
        if self.classes is None and self.weights is None:
            raise SaywhyError("class smoothing needs the head's weights or the images' classes")

    def classes_of(self, pooled: np.ndarray, start: int) -> np.ndarray:
        """The classes of the loss's images ``start`` to ``start + len(pooled)``."""
        if self.classes is not None:
            return np.asarray(self.classes[start:start + len(pooled)], np.intp)
        return predicted_classes(pooled, self.weights, self.bias)


def predicted_classes(pooled: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The classes a linear head (``weights``, ``bias``) predicts for rows of ``pooled``."""
    return (np.asarray(pooled, np.float64) @ weights.T + bias).argmax(axis=1)


def class_frequency(chunks: Chunks, n_classes: int, n_attributes: int,
                    classes_of: Callable[[np.ndarray, int], np.ndarray], reduce: Reduce = _alone) -> np.ndarray:
    """(classes x attributes): per class, the share of the chunks' images of that class whose incidence
    names each attribute (0 for a class with no image). ``classes_of(x, start)`` gives the classes of a
    chunk's rows ``x``, the chunk starting at image ``start``; the sums are added up by ``reduce``."""
    sums = np.zeros(n_classes * (n_attributes + 1))
    start = 0
    for x, y in chunks():
        classes = np.asarray(classes_of(x, start), np.intp)
        start += len(x)
        onehot = sp.csr_matrix((np.ones(len(classes)), (classes, np.arange(len(classes)))), shape=(n_classes, len(classes)))
        sums[:n_classes * n_attributes] += np.asarray((onehot @ (sp.csr_matrix(y) > 0).astype(np.float64)).todense()).ravel()
        sums[n_classes * n_attributes:] += np.bincount(classes, minlength=n_classes)
    sums = reduce(sums)
    present, counts = sums[:n_classes * n_attributes].reshape(n_classes, n_attributes), sums[n_classes * n_attributes:]
    return present / np.maximum(counts, 1.0)[:, None]


class EvidenceLoss:
    """The data term of the fit for one block of attributes, summed over images (no 1/n, no penalty).

    Sums over images are what a shard or a rank computes; :func:`fit_evidence_blocks` adds
    them up, divides by n and adds the penalty. Rows are standardized per filter with the
    fit's ``mean`` and ``std``; products run in ``dtype`` (float32 by default: the loss and
    gradient agree with float64 to about 1e-6 relative, ``tests/test_evidence_fit.py``),
    sums in float64. Temporaries are one chunk x block wide. With ``smoothing``
    (:class:`ClassSmoothing`) the targets are drawn toward the predicted class's caption
    frequencies; they are then one chunk x block wide too. The standardized rows and the
    block's targets are kept between evaluations for the first chunks, :data:`KEEP_BYTES` in
    all, and made again for the rest.
    """

    def __init__(self, chunks: Chunks, mean: np.ndarray, std: np.ndarray, dtype: type = np.float32,
                 smoothing: ClassSmoothing | None = None):
        self.chunks, self.dtype = chunks, dtype
        self.mean, self.std = np.asarray(mean, dtype), np.asarray(std, dtype)
        self.smoothing = smoothing if smoothing is not None and smoothing.share > 0 else None
        self._block: tuple[int, int] | None = None
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self._classes: list[np.ndarray] = []  # per chunk, the predicted classes (with smoothing)
        self._standardized: list[np.ndarray] = []  # the first chunks' standardized rows, KEEP_BYTES in all
        self._targets: list[np.ndarray] = []  # the block's first chunks' drawn targets (with smoothing)
        self._budget = KEEP_BYTES  # what the kept rows and targets may take (a view: its share of it)
        self._prepared = False  # whether view() has made the kept rows and classes

    def __call__(self, lo: int, hi: int, a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Loss sum, gradient sums for ``a`` (block x filters) and ``b`` (block), attributes ``lo:hi``."""
        a_t, b_t = np.ascontiguousarray(a.T, self.dtype), np.asarray(b, self.dtype)
        loss, grad_a, grad_b = 0.0, np.zeros(a.shape), np.zeros(b.shape)
        # The block's (image, attribute) pairs, per chunk: found on the block's first evaluation
        # and kept (sparse) for the next ones, which L-BFGS makes by the hundred.
        known = self._pairs if self._block == (lo, hi) else None
        if known is None:  # a new block: its targets are made again
            self._targets = []
        pairs, start = [], 0
        for c, (x, y) in enumerate(self.chunks()):
            xs = self._standardize(c, x)
            z = xs @ a_t + b_t
            if known is None:
                present = sp.csr_matrix(y)[:, lo:hi].tocoo()
                present.sum_duplicates()
                keep = present.data > 0
                pairs.append((present.row[keep].astype(np.int32), present.col[keep].astype(np.int32)))
            rows, cols = known[c] if known is not None else pairs[-1]
            # BCE with logits: log(1 + e^z) - y z, y sparse and 0/1 (or drawn toward the class).
            residual = sigmoid(z)
            if self.smoothing is None:
                loss += float(softplus(z).sum(dtype=np.float64)) - float(z[rows, cols].sum(dtype=np.float64))
                residual[rows, cols] -= 1.0
            else:
                share = self.smoothing.share
                if c == len(self._classes):
                    self._classes.append(self.smoothing.classes_of(x, start))
                start += len(x)
                if c < len(self._targets):
                    target = self._targets[c]
                else:
                    target = share * np.asarray(self.smoothing.frequency[self._classes[c], lo:hi], self.dtype)
                    target[rows, cols] += 1.0 - share
                    if c == len(self._targets) and self._keep(target):
                        self._targets.append(target)
                loss += float(softplus(z).sum(dtype=np.float64)) - float((target * z).sum(dtype=np.float64))
                residual -= target
            grad_a += (residual.T @ xs).astype(np.float64)
            grad_b += residual.sum(axis=0, dtype=np.float64)
        if known is None:
            self._block, self._pairs = (lo, hi), pairs
        return loss, grad_a, grad_b

    @property
    def _kept_bytes(self) -> int:
        return sum(kept.nbytes for kept in self._standardized + self._targets)

    def _keep(self, array: np.ndarray) -> bool:
        """Whether ``array`` fits in what is left of :data:`KEEP_BYTES` (the caller then keeps it)."""
        return self._kept_bytes + array.nbytes <= self._budget

    def prepare(self) -> None:
        """One pass that standardizes and keeps the rows this loss would keep (and finds the predicted
        classes), after which no evaluation changes them: what :meth:`view` s share, read only."""
        if self._prepared:
            return
        start = 0
        for c, (x, _) in enumerate(self.chunks()):
            if c == len(self._standardized):
                self._standardize(c, x)
            if self.smoothing is None and c >= len(self._standardized):
                break  # nothing more to keep, and no classes to find
            if self.smoothing is not None and c == len(self._classes):
                self._classes.append(self.smoothing.classes_of(x, start))
            start += len(x)
        self._prepared = True

    def view(self, share: int) -> EvidenceLoss:
        """A loss for one block fitted beside others (``fit_evidence_blocks``' ``map_blocks``): it reads the
        rows and classes :meth:`prepare` kept, and keeps its own block's pairs and targets, within a
        ``share``-th of what :data:`KEEP_BYTES` leaves."""
        self.prepare()
        kept = sum(rows.nbytes for rows in self._standardized)
        return copy.copy(self)._for_one_block(kept + max(0, KEEP_BYTES - kept) // max(1, share))

    def _for_one_block(self, budget: int) -> EvidenceLoss:
        """This (copied) loss with no block state of its own yet, keeping at most ``budget`` bytes."""
        self._block, self._pairs, self._targets, self._budget = None, [], [], budget
        return self

    def _standardize(self, c: int, x: np.ndarray) -> np.ndarray:
        """Chunk ``c``'s rows ``x`` standardized, from the kept ones where chunk ``c`` is kept."""
        if c < len(self._standardized):
            return self._standardized[c]
        xs = (np.asarray(x, self.dtype) - self.mean) / self.std
        if not self._prepared and c == len(self._standardized) and self._keep(xs):
            self._standardized.append(xs)
        return xs


Evaluate = Callable[[int, int, np.ndarray, np.ndarray], tuple[float, np.ndarray, np.ndarray]]


MapBlocks = Callable[[Callable[[tuple[int, int]], np.ndarray], Sequence[tuple[int, int]]], list]


def fit_evidence_blocks(evaluate: Evaluate, moments: EvidenceMoments, l2: float = EVIDENCE_L2,
                        max_iter: int = 300, block: int = BLOCK, history: int = HISTORY,
                        tolerance: float = TOLERANCE, start: AttributeEvidence | None = None,
                        map_blocks: MapBlocks | None = None) -> AttributeEvidence:
    """L-BFGS on each block of attributes, with ``evaluate`` returning the data term's sums over all images.

    The objective of a block is, per attribute, the mean cross-entropy over the images plus
    ``l2`` / 2 ||a_t||^2, summed over the block's attributes: attributes are independent
    problems, so the stopping rule (projected gradient below ``tolerance``, or a relative
    decrease below L-BFGS-B's ftol) means the same at 10 or 10,000 attributes, and memory
    is ``history`` x ``block`` x filters whatever the vocabulary. See ``TOLERANCE`` for the
    stopping rule's value. ``evaluate`` may sum over
    shards or ranks (``saywhy.distributed``). ``start``: weights and biases on the raw activations to
    start from (default zero weights and the base-rate biases); each problem is convex, so only the
    path to the optimum changes, not the optimum. ``map_blocks(solve, spans)``: how the blocks are
    solved, e.g. side by side on threads (``saywhy.blas.side_by_side``; the same numbers as one after
    the other on one BLAS thread); it needs an :class:`EvidenceLoss`, each block then reading its own :meth:`EvidenceLoss.view`.
    """
    import scipy.optimize  # here, not at the top: every explain imports this module, only a fit needs L-BFGS

    if l2 <= 0:
        raise SaywhyError(f"the attribute model's L2 penalty must be positive, got {l2}")
    n, f, t = moments.n, len(moments.mean), len(moments.present)
    base = np.clip(moments.present / n, 1e-4, 1 - 1e-4)
    a_all, b_all = np.zeros((t, f)), np.log(base / (1 - base))
    if start is not None:  # the same model in the standardized units the fit works in
        a_all = np.asarray(start.weights, np.float64) * moments.std
        b_all = np.asarray(start.bias, np.float64) + np.asarray(start.weights, np.float64) @ moments.mean
    spans = [(lo, min(lo + block, t)) for lo in range(0, t, block)]
    side_by_side = map_blocks is not None and len(spans) > 1  # else map_blocks runs the one block as it is
    if side_by_side and not isinstance(evaluate, EvidenceLoss):
        raise SaywhyError("blocks fitted side by side need an EvidenceLoss (its views keep each block's own state)")

    def solve(span: tuple[int, int]) -> np.ndarray:
        lo, hi = span
        size = hi - lo
        own = evaluate.view(len(spans)) if side_by_side else evaluate

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            a, b = theta[: size * f].reshape(size, f), theta[size * f:]
            loss, grad_a, grad_b = own(lo, hi, a, b)
            value = loss / n + 0.5 * l2 * float(np.sum(a * a))
            return value, np.concatenate([(grad_a / n + l2 * a).ravel(), grad_b / n])

        theta = np.concatenate([a_all[lo:hi].ravel(), b_all[lo:hi]])
        return scipy.optimize.minimize(objective, theta, jac=True, method="L-BFGS-B",
                                       options={"maxiter": max_iter, "maxcor": history, "gtol": tolerance,
                                                "maxls": 10}).x

    if side_by_side:
        evaluate.prepare()  # the kept rows made once, before the blocks read them side by side
    for (lo, hi), x in zip(spans, map_blocks(solve, spans) if map_blocks is not None else map(solve, spans)):
        a_all[lo:hi] = x[: (hi - lo) * f].reshape(hi - lo, f)
        b_all[lo:hi] = x[(hi - lo) * f:]
    weights = a_all / moments.std
    return AttributeEvidence(weights, b_all - weights @ moments.mean)


def fit_attribute_evidence_chunks(chunks: Chunks, n_filters: int, n_attributes: int, l2: float = EVIDENCE_L2,
                                  max_iter: int = 300, dtype: type = np.float32, block: int = BLOCK,
                                  smoothing: ClassSmoothing | None = None,
                                  start: AttributeEvidence | None = None,
                                  map_blocks: MapBlocks | None = None) -> AttributeEvidence:
    """:func:`fit_attribute_evidence` on data read chunk by chunk (from disk, or generated): nothing
    images x attributes or images x filters wide is ever held."""
    moments = chunk_moments(chunks, n_filters, n_attributes)
    loss = EvidenceLoss(chunks, moments.mean, moments.std, dtype, smoothing)
    return fit_evidence_blocks(loss, moments, l2, max_iter, block, start=start, map_blocks=map_blocks)


def row_chunks(pooled: np.ndarray, incidence: sp.spmatrix, rows: int = CHUNK_ROWS) -> Chunks:
    """In-memory arrays as a :data:`Chunks` source of ``rows`` images at a time."""
    incidence = sp.csr_matrix(incidence)
    return lambda: ((pooled[i:i + rows], incidence[i:i + rows]) for i in range(0, len(pooled), rows))


def fit_attribute_evidence(pooled: np.ndarray, incidence: sp.spmatrix | np.ndarray, l2: float = EVIDENCE_L2,
                           max_iter: int = 300, dtype: type = np.float32, block: int = BLOCK,
                           smoothing: ClassSmoothing | None = None,
                           start: AttributeEvidence | None = None,
                           map_blocks: MapBlocks | None = None) -> AttributeEvidence:
    """Fit every attribute's logistic model (L-BFGS on each attribute's mean cross-entropy).

    Activations are standardized per filter for the fit (so the L2 penalty ``l2`` / 2 *
    ||a_t||^2 treats every filter alike), then the weights are mapped back to raw
    activations. Biases start at the attributes' log base-rate odds and are not penalized.
    Each attribute's problem is the same whatever the vocabulary around it.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 3))
    >>> y = (x[:, [0]] > 0).astype(float)       # the attribute is there when filter 0 is high
    >>> model = fit_attribute_evidence(x, y, l2=1e-4)
    >>> int(np.argmax(model.weights[0])), bool(model.weights[0, 0] > 1)
    (0, True)
    """
    x = np.asarray(pooled)
    y = sp.csr_matrix(incidence, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise SaywhyError(f"{y.shape[0]} images have attributes but {x.shape[0]} have activations")
    if l2 <= 0:
        raise SaywhyError(f"the attribute model's L2 penalty must be positive, got {l2}")
    if x.shape[0] == 0 or y.shape[1] == 0:
        raise SaywhyError(f"the attribute model needs fitting images and attributes, got {x.shape[0]} images and "
                          f"{y.shape[1]} attributes")
    return fit_attribute_evidence_chunks(row_chunks(x, y), x.shape[1], y.shape[1], l2, max_iter, dtype, block,
                                         smoothing, start, map_blocks)
