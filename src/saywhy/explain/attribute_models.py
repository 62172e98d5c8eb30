"""How filters tie to attributes: one small class per model, behind one interface.

The explainer owns the loop (eq. 5-8: pick the class, weigh the filters by p(f|x,c) of
eq. 6, rank, write the sentence); an attribute model only says what a filter means for
an attribute. Two are registered:

- ``cooccurrence``: the paper's p(t|f) of eq. 1-4 (:mod:`saywhy.core.filter_attribute`).
  Eq. 5 is ``p(f|x,c) @ p(t|f)``: a distribution over attributes.
- ``evidence``: saywhy's default, one logistic model per attribute on the pooled
  activations (:mod:`saywhy.core.attribute_evidence`). Eq. 5 weighs each filter's
  log-odds evidence by p(f|x,c).

Each model reads only its own settings (``settings``), and declares them so that the
explainer can refuse a setting that would have no effect. The paper's p(t|f) is always
fitted too, because Figure 5 shows it; its settings therefore always matter.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from saywhy.blas import one_blas_thread, side_by_side, usable_cores
from saywhy.core.attribute_evidence import (
    BLOCK,
    KEEP_BYTES,
    AttributeEvidence,
    ClassSmoothing,
    EvidenceLoss,
    EvidenceMoments,
    chunk_moments,
    class_frequency,
    fit_evidence_blocks,
    predicted_classes,
    row_chunks,
)
from saywhy.core.filter_attribute import (
    FilterAttributeStatistics,
    TopValues,
    attribute_incidence,
    filter_attribute_pdf,
    filter_given_image,
)
from saywhy.core.logistic import softplus
from saywhy.core.prior import PriorStatistics
from saywhy.errors import SaywhyError


SMALL_FIT = 3e7  # multiply-adds per evaluation below which the evidence fit uses one BLAS thread
SIDE_BY_SIDE_BYTES = 2 * 2**30  # what the part groups fitted at once may hold together

FitChunks = Callable[[], Iterable[tuple[np.ndarray, sp.csr_matrix]]]
"""The fitting images as a re-iterable source of (pooled activations, term counts) row chunks,
always in the same order: from memory, from shard files, or this rank's part of them."""


class Combine:
    """How the sums over images of one process are added up with the others' (none here).

    The fit only ever needs sums over images (eq. 2, the prior's counts, the evidence
    model's loss and gradient), a maximum and the largest values per filter: this class is
    the single-process case; ``saywhy.distributed.RankCombine`` adds them up across ranks.
    """

    def sum(self, array: np.ndarray) -> np.ndarray:
        return array

    def max(self, array: np.ndarray) -> np.ndarray:
        return array

    def top_values(self, top: TopValues) -> TopValues:
        return top

    def fit_evidence(self, loss: EvidenceLoss, moments: EvidenceMoments, l2: float) -> AttributeEvidence:
        """The evidence L-BFGS, its blocks side by side on the cores (the same numbers as one by one)."""
        return fit_evidence_blocks(loss, moments, l2, map_blocks=side_by_side)


@dataclass
class Scores:
    """Eq. 5 for a batch (images x attributes), each array computed once.

    ``log_p`` is what rankings use; ``own`` is the image's own evidence for each attribute
    (zero where the image gives none: an all-zero image has none for any attribute);
    ``evidence`` is the evidence model's class-weighted log-odds, None for p(t|f).
    """

    p: np.ndarray
    log_p: np.ndarray
    own: np.ndarray
    evidence: np.ndarray | None = None


class AttributeModel(ABC):
    """The interface: fit on pooled activations and caption incidence, then score images."""

    name: ClassVar[str]
    settings: ClassVar[tuple[str, ...]]  # the ExplainerConfig fields this model reads
    score_name: ClassVar[str]  # what an explanation's per-attribute score is, for users

    def __init__(self, config: Any):
        self.config = config

    def fit(self, pooled: np.ndarray, incidence: sp.csr_matrix, term_counts: sp.spmatrix) -> AttributeModel:
        """Learn from the fitting images (pooled: images x filters, term counts: images x attributes)."""
        counts = sp.csr_matrix(term_counts)
        rows = 4096
        return self.fit_chunks(lambda: ((pooled[i:i + rows], counts[i:i + rows]) for i in range(0, len(pooled), rows)),
                               pooled.shape[1], counts.shape[1], len(pooled))

    @abstractmethod
    def fit_chunks(self, chunks: FitChunks, n_filters: int, n_attributes: int, n_images: int,
                   combine: Combine = Combine(), head: tuple[np.ndarray, np.ndarray] | None = None) -> AttributeModel:
        """Learn from the fitting images read chunk by chunk; ``n_images`` counts every process's;
        ``head`` is the network's linear head (weights, bias), for a model that reads its classes."""

    @abstractmethod
    def scores(self, pooled: np.ndarray, p_filter: np.ndarray) -> Scores:
        """Eq. 5 with p(f|x,c) = ``p_filter`` (images x filters)."""

    def ranked(self, pooled: np.ndarray, p_filter: np.ndarray) -> Scores:
        """:meth:`scores` as explanations rank by them: a model may compute these faster and less exactly
        (their order, not their digits, is used); what is printed comes from :meth:`readable_at` and
        :meth:`evidence_at`."""
        return self.scores(pooled, p_filter)

    def evidence_at(self, pooled: np.ndarray, p_filter: np.ndarray, rows: np.ndarray,
                    columns: np.ndarray) -> np.ndarray | None:
        """``scores(...).evidence`` at the (row, column) pairs only, exactly; None where the model has none."""
        evidence = self.scores(pooled, p_filter).evidence
        return None if evidence is None else evidence[rows, columns]

    @abstractmethod
    def contrast_units(self, pooled: np.ndarray, p_filter: np.ndarray) -> np.ndarray:
        """Eq. 5 with the filters weighted by ``p_filter`` (one side of a contrast), in the units a
        contrast subtracts: probabilities for p(t|f), log-odds for the evidence model. The weighting
        is always applied: a contrast is about the filters that separate two classes."""

    @abstractmethod
    def readable(self, pooled: np.ndarray, scores: Scores) -> np.ndarray:
        """The per-attribute score shown to users (see ``score_name``), in [0, 1]."""

    def readable_log(self, pooled: np.ndarray, scores: Scores) -> np.ndarray:
        """The log of :meth:`readable`, exact where the score rounds to 1 or 0 (what rankings read)."""
        return np.log(np.maximum(self.readable(pooled, scores), 1e-300))

    def readable_at(self, pooled: np.ndarray, scores: Scores, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """:meth:`readable` at the (row, column) pairs only: what an explanation prints for its cited attributes."""
        return self.readable(pooled, scores)[rows, columns]

    def located(self, pooled: np.ndarray, class_pooled: np.ndarray, classes: np.ndarray) -> np.ndarray | None:
        """(images x attributes) True where an attribute may be cited under ``located_evidence``: it reads no
        part pool, or its evidence read at its part in the image exceeds that in ``class_pooled[classes]``
        (the explained class's mean fitting image); None for a model without part pools."""
        return None

    def located_at(self, pooled: np.ndarray, class_pooled: np.ndarray, classes: np.ndarray, rows: np.ndarray,
                   columns: np.ndarray) -> np.ndarray | None:
        """:meth:`located` at the (row, column) pairs only."""
        located = self.located(pooled, class_pooled, classes)
        return None if located is None else located[rows, columns]

    @abstractmethod
    def class_ranking(self, class_pooled: np.ndarray, p_filter: np.ndarray, p_filter_class: np.ndarray) -> np.ndarray:
        """Eq. 7-8, (classes x attributes), in log units so that the order survives rounding."""

    @abstractmethod
    def grounding_alphas(self, vocabulary: list[str], attribute_images: np.ndarray) -> np.ndarray:
        """Eq. 9's alpha for every attribute (filters x attributes)."""

    @abstractmethod
    def filter_shares(self, pooled: np.ndarray, p_filter: np.ndarray, attributes: np.ndarray) -> np.ndarray:
        """(images x filters): how much each filter carries the given attributes (a row of indices per image)."""

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted state, for saving."""

    @abstractmethod
    def load_arrays(self, arrays: dict[str, np.ndarray], n_images: int) -> AttributeModel:
        """Restore what :meth:`arrays` saved."""


def _above(evidence: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Where the part evidence is above the class mean's (NaN: the attribute reads no part pool, kept), by more
    than rounding: the two sums come from different kernels (a whole row's product or one pair's), so an image
    equal to its class's mean would otherwise be decided by 1e-16."""
    return np.isnan(evidence) | (evidence - reference > 1e-9 * (1.0 + np.abs(reference)))


class CooccurrenceModel(AttributeModel):
    """The paper's p(t|f), eq. 1-4: how often an attribute's images activate a filter.

    Fitted state: ``pdf_`` (filters x attributes, rows sum to 1), ``prior_``,
    ``statistics_`` (the sums of eq. 2), ``filter_max_`` and ``filter_threshold_``.
    """

    name = "cooccurrence"
    settings = ("sigma_activation", "top_fraction", "filter_scale", "prior", "likelihood")
    score_name = "p(t|x,c), eq. 5: the share of the decision's filters' attribute mass (sums to 1 over attributes)"

    def fit_chunks(self, chunks, n_filters, n_attributes, n_images, combine=Combine(), head=None):
        # Pass 1: the per-filter maximum and the thresholds of sigma "top" (exact, from the
        # largest values only). Pass 2: eq. 2's sums and the prior's counts, chunk by chunk.
        cfg = self.config
        top = TopValues(max(n_images, 1), n_filters, cfg.top_fraction)
        highest = np.full(n_filters, -np.inf)
        for pooled, _ in chunks():
            if len(pooled):
                highest = np.maximum(highest, np.asarray(pooled, np.float64).max(axis=0))
                top.add(pooled)
        self.filter_max_ = np.where(np.isfinite(highest := combine.max(highest)), highest, 0.0)
        self.filter_threshold_ = combine.top_values(top).thresholds() if n_images else np.full(n_filters, np.inf)
        likelihood, present = np.zeros((n_attributes, n_filters)), np.zeros(n_attributes)
        documents, document_frequency, term_frequency = 0, np.zeros(n_attributes), np.zeros(n_attributes)
        for pooled, counts in chunks():
            part = FilterAttributeStatistics.from_chunk(self.filter_given_image(pooled), attribute_incidence(counts))
            likelihood += part.likelihood_sum
            present += part.attribute_images
            prior = PriorStatistics.from_counts(counts)
            documents += prior.n_documents
            document_frequency += prior.document_frequency
            term_frequency += prior.term_frequency_sum
        sums = combine.sum(np.concatenate([likelihood.ravel(), present, document_frequency, term_frequency, [documents]]))
        t, f = n_attributes, n_filters
        self.statistics_ = FilterAttributeStatistics(sums[:t * f].reshape(t, f), sums[t * f:t * f + t], n_images)
        prior = PriorStatistics(int(sums[-1]), sums[t * f + t:t * f + 2 * t].astype(np.int64), sums[t * f + 2 * t:-1])
        self.prior_ = np.asarray(prior.prior(cfg.prior), dtype=np.float64)
        self.pdf_ = filter_attribute_pdf(self.statistics_, self.prior_, cfg.likelihood)
        return self

    def filter_given_image(self, pooled: np.ndarray) -> np.ndarray:
        """Eq. 3 with this model's sigma."""
        cfg = self.config
        return filter_given_image(pooled, cfg.sigma_activation, cfg.filter_scale, self.filter_max_,
                                  self.filter_threshold_)

    def scores(self, pooled, p_filter):
        p = p_filter @ self.pdf_  # eq. 5
        with np.errstate(divide="ignore"):
            return Scores(p, np.log(p), p)

    def contrast_units(self, pooled, p_filter):
        return p_filter @ self.pdf_

    def readable(self, pooled, scores):
        return scores.p

    def readable_log(self, pooled, scores):
        return scores.log_p

    def class_ranking(self, class_pooled, p_filter, p_filter_class):
        with np.errstate(divide="ignore"):
            return np.log(p_filter_class @ self.pdf_)  # eq. 7 with eq. 8

    def grounding_alphas(self, vocabulary, attribute_images):
        return self.pdf_

    def filter_shares(self, pooled, p_filter, attributes):
        return p_filter * self.pdf_.T[np.asarray(attributes)].sum(axis=1)

    def unnormalized(self, filter_index: int) -> np.ndarray:
        """Eq. 1 before normalizing, p(t) sum_x p(f|x) p(x|t), for one filter (Figure 5's bars)."""
        return self.prior_ * self.statistics_.likelihood_sum[:, filter_index]

    def arrays(self):
        return {"filter_attribute_pdf": self.pdf_, "prior": self.prior_, "filter_max": self.filter_max_,
                "filter_threshold": self.filter_threshold_, "likelihood_sum": self.statistics_.likelihood_sum,
                "attribute_images": self.statistics_.attribute_images}

    def load_arrays(self, arrays, n_images):
        self.pdf_, self.prior_ = arrays["filter_attribute_pdf"], arrays["prior"]
        self.filter_max_, self.filter_threshold_ = arrays["filter_max"], arrays["filter_threshold"]
        self.statistics_ = FilterAttributeStatistics(arrays["likelihood_sum"], arrays["attribute_images"], n_images)
        return self


class EvidenceModel(AttributeModel):
    """One logistic model per attribute; filter k carries evidence a_tk phi_k(x) for t.

    With ``class_weighting`` eq. 5 reads each filter's evidence through F p(f_k|x,c);
    without, every class gets p(t|x), the image alone. ``grounding`` picks eq. 9's alpha.
    Fitted state: ``evidence_`` (:class:`~saywhy.core.attribute_evidence.AttributeEvidence`).

    With part pooling (:meth:`fit_parts`), the activations it is given are the global pool phi(x)
    followed by the part pools psi_g(x) of :mod:`saywhy.core.part_pooling` (images x F (1 + G)),
    and each part-attribute reads its own group's pool.
    """

    name = "evidence"
    settings = ("evidence_l2", "class_weighting", "grounding", "evidence_pooling", "evidence_smoothing",
                "retrieval_score", "located_evidence")
    score_name = ("p(t|x): the calibrated probability that the image's captions name the attribute, "
                  "from the image alone (the ranking weighs the evidence by the class's filters)")

    def fit_chunks(self, chunks, n_filters, n_attributes, n_images, combine=Combine(), head=None):
        # Each of the fit's hundreds of evaluations is two (images x filters x attributes)
        # products. Below about 3e7 multiply-adds, BLAS threads cost more than they save, and
        # after a forward pass they fight torch's for the cores: a 77 x 512 x 98 fit took 27 s
        # with 2 OpenBLAS threads and 1.6 s with one (2-core machine, BENCHMARKS.md).
        small = n_images * n_filters * min(n_attributes, BLOCK) < SMALL_FIT
        with one_blas_thread() if small else contextlib.nullcontext():
            # Term counts serve as incidence: the loss reads only which counts are above 0 (eq. 4).
            moments = chunk_moments(chunks, n_filters, n_attributes, combine.sum)
            loss = EvidenceLoss(chunks, moments.mean, moments.std, smoothing=self._smoothing(chunks, n_attributes,
                                                                                             combine, head))
            # evidence_l2 is per vocabulary term (ExplainerConfig): the penalty each attribute's own
            # problem gets grows with the vocabulary, as chosen on held-out training images.
            self.evidence_ = combine.fit_evidence(loss, moments, self.config.evidence_l2 * n_attributes)
        return self

    def _smoothing(self, chunks, n_attributes, combine, head) -> ClassSmoothing | None:
        """The targets' pull toward the predicted class (``evidence_smoothing``), or None for 0/1 targets."""
        share = float(getattr(self.config, "evidence_smoothing", 0.0))
        if share == 0.0:
            return None
        if head is None:
            raise SaywhyError("evidence smoothing reads the classes the network predicts: give the head to the fit")
        weights, bias = (np.asarray(a, np.float64) for a in head)
        frequency = class_frequency(chunks, len(weights), n_attributes,
                                    lambda x, start: predicted_classes(x, weights, bias), combine.sum)
        return ClassSmoothing(share, frequency, weights, bias)

    def fit_parts(self, features: np.ndarray, term_counts: sp.spmatrix, sources: np.ndarray,
                  classes: np.ndarray | None = None) -> EvidenceModel:
        """Refit the attributes whose ``sources`` entry is a part group g >= 0 on that group's pool (with
        ``evidence_pooling="both"``: on the pool and phi(x) side by side), from ``features`` (images x
        F (1 + G): phi(x), then each group's psi_g(x)) of the fitting images and their ``term_counts``;
        the others keep their fit on phi(x). The same L2 as the global fit, and with
        ``evidence_smoothing`` the same pull toward ``classes`` (the images' predicted classes)."""
        from saywhy.core.attribute_evidence import fit_attribute_evidence

        f = self.evidence_.weights.shape[1]
        features = np.asarray(features, np.float64)
        sources = np.asarray(sources, np.int64)
        counts = sp.csr_matrix(term_counts)
        weights, bias = self.evidence_.weights.copy(), self.evidence_.bias.copy()
        both = self.config.evidence_pooling == "both"
        global_weights = np.zeros_like(weights) if both else None
        share = float(getattr(self.config, "evidence_smoothing", 0.0))
        if share > 0.0 and classes is None:
            raise SaywhyError("evidence smoothing reads the classes the network predicts: give them to the part fit")
        classes = None if classes is None else np.asarray(classes, np.intp)
        frequency = None if share == 0.0 else class_frequency(
            row_chunks(features[:, :f], counts), int(classes.max()) + 1, counts.shape[1],
            lambda x, start: classes[start:start + len(x)])

        def fit_group(g: int) -> AttributeEvidence:
            js = np.flatnonzero(sources == g)
            x = features[:, f * (1 + g):f * (2 + g)]
            smoothing = None if frequency is None else ClassSmoothing(share, frequency[:, js], classes=classes)
            # started from the global fit (the pool's weights at zero, or the global weights moved onto
            # the pool): a convex problem, so the same optimum, reached in fewer evaluations
            known = self.evidence_.weights[js]
            start = AttributeEvidence(np.concatenate([np.zeros_like(known), known], axis=1) if both else known,
                                      self.evidence_.bias[js])
            return fit_attribute_evidence(np.concatenate([x, features[:, :f]], axis=1) if both else x, counts[:, js],
                                          self.config.evidence_l2 * counts.shape[1], smoothing=smoothing, start=start)

        # the groups are independent fits: side by side on the cores, the largest first, as many at once as
        # SIDE_BY_SIDE_BYTES holds (each has its images x 2F float64 rows and up to KEEP_BYTES kept)
        groups = sorted(np.unique(sources[sources >= 0]).tolist(), key=lambda g: -int(np.sum(sources == g)))
        each = len(features) * f * (2 if both else 1) * 8 + KEEP_BYTES
        workers = max(1, min(usable_cores(), SIDE_BY_SIDE_BYTES // each))
        for g, fitted in zip(groups, side_by_side(fit_group, groups, workers)):
            js = np.flatnonzero(sources == g)
            weights[js], bias[js] = fitted.weights[:, :f], fitted.bias
            if both:
                global_weights[js] = fitted.weights[:, f:]
        self.evidence_ = AttributeEvidence(weights, bias, sources.copy(), global_weights)
        return self

    def _split(self, pooled):
        """(phi(x), the part pools or None) from the activations the explainer hands over."""
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        f = self.evidence_.weights.shape[1]
        return pooled[:, :f], (pooled[:, f:].reshape(len(pooled), pooled.shape[1] // f - 1, f) if pooled.shape[1] > f else None)

    def _weighting(self, p_filter):
        return p_filter if self.config.class_weighting else None

    def scores(self, pooled, p_filter, single=False):
        phi, parts = self._split(pooled)
        logits = self.evidence_.logits(phi, self._weighting(p_filter), parts, single=single)
        log_p = -softplus(-logits)  # log sigmoid, exact where p rounds to 1
        return Scores(np.exp(log_p), log_p, logits - self.evidence_.bias, logits)

    def ranked(self, pooled, p_filter):
        return self.scores(pooled, p_filter, single=True)  # the weights read in float32: half the bytes

    def evidence_at(self, pooled, p_filter, rows, columns):
        phi, parts = self._split(pooled)
        return self.evidence_.logits_at(phi, rows, columns, self._weighting(p_filter), parts)  # scores().evidence

    def contrast_units(self, pooled, p_filter):
        phi, parts = self._split(pooled)
        return self.evidence_.logits(phi, p_filter, parts)

    def readable(self, pooled, scores):
        phi, parts = self._split(pooled)
        return self.evidence_.probability(phi, parts=parts)

    def readable_log(self, pooled, scores):
        phi, parts = self._split(pooled)
        return -softplus(-self.evidence_.logits(phi, parts=parts))  # log p(t|x)

    def readable_at(self, pooled, scores, rows, columns):
        phi, parts = self._split(pooled)
        return self.evidence_.probability_at(phi, rows, columns, parts)  # p(t|x) of the cited pairs only

    def _class_part_logits(self, class_pooled):
        """:meth:`AttributeEvidence.part_logits` of each class's mean fitting image, made once per array."""
        memo = getattr(self, "_class_part_memo", None)
        if memo is None or memo[0] is not class_pooled or memo[1] is not self.evidence_:
            _, parts = self._split(class_pooled)
            memo = (class_pooled, self.evidence_, None if parts is None else self.evidence_.part_logits(parts))
            self._class_part_memo = memo
        return memo[2]

    def located(self, pooled, class_pooled, classes):
        _, parts = self._split(pooled)
        reference = self._class_part_logits(class_pooled)
        if parts is None or reference is None:
            return None
        return _above(self.evidence_.part_logits(parts), reference[np.asarray(classes)])

    def located_at(self, pooled, class_pooled, classes, rows, columns):
        _, parts = self._split(pooled)
        reference = self._class_part_logits(class_pooled)
        if parts is None or reference is None:
            return None
        return _above(self.evidence_.part_logits_at(parts, rows, columns), reference[np.asarray(classes)[rows], columns])

    def class_ranking(self, class_pooled, p_filter, p_filter_class):
        phi, parts = self._split(class_pooled)
        return self.evidence_.logits(phi, self._weighting(p_filter), parts)

    def grounding_alphas(self, vocabulary, attribute_images):
        weights = self.evidence_.weights.T
        if self.config.grounding == "positive":
            return np.maximum(weights, 0.0)
        if self.config.grounding == "signed":
            return weights
        return part_weights(weights, vocabulary, attribute_images)

    def filter_shares(self, pooled, p_filter, attributes):
        return p_filter * self.evidence_.filter_evidence(self._split(pooled)[0], attributes)

    def arrays(self):
        out = {"evidence_weights": self.evidence_.weights, "evidence_bias": self.evidence_.bias}
        if self.evidence_.sources is not None:
            out["evidence_sources"] = self.evidence_.sources.astype(np.float64)
        if self.evidence_.global_weights is not None:
            out["evidence_global_weights"] = self.evidence_.global_weights
        return out

    def load_arrays(self, arrays, n_images):
        sources = arrays.get("evidence_sources")
        self.evidence_ = AttributeEvidence(arrays["evidence_weights"], arrays["evidence_bias"],
                                           None if sources is None else np.asarray(sources).astype(np.int64),
                                           arrays.get("evidence_global_weights"))
        return self


ATTRIBUTE_MODELS: dict[str, type[AttributeModel]] = {m.name: m for m in (EvidenceModel, CooccurrenceModel)}


def attribute_model(name: str, config: Any) -> AttributeModel:
    """An unfitted attribute model by registered name."""
    if name not in ATTRIBUTE_MODELS:
        raise SaywhyError(f"unknown attribute model {name!r}: choose one of {', '.join(ATTRIBUTE_MODELS)}")
    return ATTRIBUTE_MODELS[name](config)


def part_weights(weights: np.ndarray, vocabulary: list[str], images: np.ndarray) -> np.ndarray:
    """(filters x attributes): each column replaced by the mean of the columns of every attribute
    with the same noun, weighted by the number of images carrying each ("white belly" and
    "yellow belly" both get the belly's weights).

    >>> part_weights(np.array([[1.0, 3.0, 5.0]]), ["white belly", "yellow belly", "red crown"], np.array([3, 1, 2])).tolist()
    [[1.5, 1.5, 5.0]]
    """
    from saywhy.explain.sentence import split_attribute

    out = np.empty_like(weights)
    columns: dict[str, list[int]] = {}
    for j, term in enumerate(vocabulary):
        columns.setdefault(split_attribute(term)[1], []).append(j)
    counts = np.asarray(images, np.float64)
    for js in columns.values():
        share = counts[js] / counts[js].sum() if counts[js].sum() > 0 else np.full(len(js), 1 / len(js))
        out[:, js] = (weights[:, js] @ share)[:, None]
    return out
