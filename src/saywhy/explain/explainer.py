"""The fitted explainer: how filters tie to attributes, learned once, then sentences for any image.

Scikit-learn style: ``__init__`` stores settings, ``fit`` learns ``attribute_model_``
(and the paper's p(t|f), ``cooccurrence_``) from pooled activations and attribute counts
and returns ``self``; fitted state ends in ``_`` and is read-only from outside. It works
on arrays only (pooled activations, head weights), so it never touches the network:
:mod:`saywhy.pipeline` (``ExplainerSession``) runs the model and hands the arrays over.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from saywhy.core.attribute_evidence import EVIDENCE_L2_PER_TERM
from saywhy.core.image_class import filter_given_class, filter_given_image_class
from saywhy.core.normalization import softmax
from saywhy.core.grounding import attribute_scores
from saywhy.core.part_maps import PartMaps, part_grounding_scores
from saywhy.core.ranking import first_k_stable
from saywhy.core.part_pooling import part_pooled, part_pooling_weights
from saywhy.errors import SaywhyError
from saywhy.explain.attribute_models import (  # noqa: F401
    Combine,
    CooccurrenceModel,
    FitChunks,
    Scores,
    attribute_model,
    part_weights,
)
from saywhy.explain.names import readable_class_name
from saywhy.explain.options import (
    ATTRIBUTE_MODELS,
    CONTRASTS,
    FILTER_SCALES,
    GROUNDINGS,
    LIKELIHOODS,
    EVIDENCE_POOLINGS,
    PART_GROUNDINGS,
    PRIORS,
    SENTENCES,
    SIGMA_ACTIVATIONS,
    SIGMAS,
    RETRIEVAL_SCORES,
    VISIBILITY_SOURCES,
)
from saywhy.explain.sentence import because_sentence, class_sentence, contrast_sentence, natural_sentence
from saywhy.files import atomic_folder
from saywhy.text.surface import SurfaceForms
from saywhy.text.synonyms import SynonymGroups

FORMAT_VERSION = 5
# Version 4 had no synonym groups; it loads with none.
READABLE_VERSIONS = (4, 5)
# Images explained at once; their scores take about 15 kB each (the vocabulary's log-probabilities,
# evidence and readable scores), so a block bounds explain's memory however many images are asked for.
EXPLAIN_BLOCK = 1024


AUTO_POOLING = "both"  # what evidence_pooling="auto" becomes with part maps (benchmarks/choose_defaults.py --part-pooling)

LOCATED_CANDIDATES = 4  # located_evidence is read for each image's first 4 x top_k attributes (Explainer._located_tops)
# What explainers saved before these settings existed did; Explainer.load gives it to those that lack them.
LEGACY_SETTINGS = {"retrieval_score": "class", "evidence_pooling": "global", "visibility_source": "pooled",
                   "visibility_threshold": 0.0, "evidence_smoothing": 0.0, "located_evidence": False}


@dataclass(frozen=True)
class ExplainerConfig:
    """Every choice the paper leaves open, by name, each validated when the config is made.

    Shared by both attribute models:
    - ``top_k``: attributes in a sentence (the paper uses 5).
    - ``sigma_decision``: sigma of eq. 6 and 8, over filters.
    - ``contrast``: "difference" compares p(t|x,X) with p(t|x,Y) (the paper); "margin"
      weighs filters by their share of the logit margin, phi_k (w_X,k - w_Y,k), which is
      exactly what separates the two scores.
    - ``min_df``: attributes must occur in at least this many images' caption files.
    - ``attribute_model``: how filters tie to attributes in eq. 5-9, a name registered in
      :data:`saywhy.explain.attribute_models.ATTRIBUTE_MODELS`: "cooccurrence" is the
      paper's p(t|f) of eq. 1-4; "evidence" fits one logistic model per attribute on the
      pooled activations and weighs each filter's log-odds evidence by p(f|x,c).
    - ``sentence``: "paper" (the paper's template, lemmas as parsed) or "natural" (the
      same template written as the captions write: articles, plurals, an apposition for
      the object's own phrases, see :mod:`saywhy.text.surface`).

    The paper's p(t|f) (``CooccurrenceModel.settings``), fitted with either model since
    Figure 5 shows it:
    - ``sigma_activation``: sigma of eq. 3: "l1", "softmax", "minmax", "identity" over
      the filters of an image (see :mod:`saywhy.core.normalization`), or "top": 1 for
      the ``top_fraction`` most activating fitting images of each filter, else 0.
    - ``top_fraction``: the share of images each filter counts as its own with "top".
    - ``filter_scale``: "none" or "max" (divide each filter by its largest activation
      before eq. 3).
    - ``prior``: the attribute prior of eq. 1 ("tfidf", "tfidf_sum", "uniform").
    - ``likelihood``: eq. 2-4 as written ("sum") or with p(x|t) normalized ("mean").

    The evidence model only (``EvidenceModel.settings``):
    - ``evidence_l2``: the L2 penalty on standardized activations per vocabulary term: each
      attribute's problem (its mean cross-entropy over the images, solved alone whatever the
      vocabulary) is penalized by ``evidence_l2 x vocabulary size``. 1e-3 was chosen on a
      held-out fifth of the training images; a fixed per-attribute value was tried and holds
      on neither dataset for both (0.1 lowers cub50's PCK, mAP and BLEU; see BENCHMARKS.md).
    - ``class_weighting``: read each filter's evidence through p(f|x,c) of eq. 6 (True),
      or use p(t|x), the image alone, for every class (False).
    - ``grounding``: eq. 9 weights: "signed" (alpha = a_t, the heatmap is the attribute's
      logit laid out in space), "positive" (only evidence for t), or "part" (the mean of
      a_t' over every attribute t' naming the same part, weighted by how many images carry
      each). "part" is the best on cub50 but collapses where a part's attributes are
      mutually exclusive colours, whose signed weights cancel (synthbirds, BENCHMARKS.md).
    - ``part_visibility``: with part maps learned from training keypoints
      (:meth:`Explainer.set_part_maps`), multiply each part-attribute's shown score by the
      probability that its part is visible in the image (and rank by it), so that a hidden
      part is not cited; no effect on an explainer without part maps.
    - ``part_grounding``: with part maps, what eq. 9's heatmap of a part-attribute becomes:
      "none" (eq. 9 as is), "maps" (the part's learned location map), "maps_alpha" (both maps,
      standardized, summed); attributes naming no part keep eq. 9. "maps" and ``part_visibility``
      off were chosen on a validation split of cub50's training images
      (``benchmarks/choose_defaults.py --part-maps``, BENCHMARKS.md).
    - ``evidence_pooling``: where the evidence model reads a part-attribute ("red crown"): "global"
      (phi(x), the maps' spatial mean, as the head does) or "part" (the maps pooled under the
      softmax over cells of its part's learned location log-odds, :mod:`saywhy.core.part_pooling`;
      attributes naming no part keep phi(x)), or "both" (the part's pool and phi(x) side by side).
      "part" and "both" need part maps (without them they are "global") and the maps of every explained
      image: the feature cache keeps the rows made from them (phi(x) and the part pools) under a key of
      the part maps, so only a first explanation of an image runs the network. The default "auto" is
      "both" where the fit learns part maps (training keypoints, one process) and "global" elsewhere
      (:meth:`for_fit`; a fitted explainer's config says which).
    - ``visibility_threshold``: with part maps, a part-attribute whose part shows with a
      probability below this is not cited (0: off); unlike ``part_visibility`` the shown score
      is unchanged.
    - ``visibility_source``: with part maps, where that probability comes from (for
      ``visibility_threshold`` and ``part_visibility``): "pooled" (a logistic model on phi(x), the
      maps' mean, :meth:`PartMaps.visibility`), "peak" (the sigmoid of the part's largest cell
      log-odds on its learned location map, :meth:`PartMaps.peak_visibility`: presence is a max-type
      question that the mean dilutes), or "both" (the smaller of the two: a part shows only where its
      peak and the logistic agree). "peak" and "both" need the maps of every explained image, kept by the
      feature cache as for part pooling.
    - ``evidence_smoothing``: the share, in [0, 1), by which each fitting image's targets are drawn
      from its captions (0/1: does one of its ten captions name t?) toward the caption frequencies of
      the class the network predicts for it (:class:`~saywhy.core.attribute_evidence.ClassSmoothing`).
      The model still reads only the image; 0 fits the captions as they are.
      The defaults of ``evidence_pooling``, ``visibility_source`` ("peak"), ``visibility_threshold``
      (0.8) and ``evidence_smoothing`` (0.25) were chosen together on a validation split of cub50's
      training images (``benchmarks/choose_defaults.py --part-pooling``: the row whose least certain
      image-specificity goal is met by the most standard errors, ``results/choose_margins.json``).
    - ``retrieval_score``: what image retrieval (Table 2, ``saywhy search``) ranks images by for an
      attribute: "class" (eq. 5, p(t|x, c) with c the predicted class) or "image" (the score the
      explanations show: the evidence model's calibrated p(t|x); eq. 5 itself for the paper's model).
      "image" was chosen on a validation split of cub50's training images, with a head refitted
      without them (``benchmarks/choose_defaults.py --part-pooling``): mAP 47.2 against eq. 5's 46.4.
      It changes no explanation: only the order in which retrieval and search return images.
    - ``located_evidence``: with part-pooled evidence ("part" or "both"), a part-attribute is cited
      only where the evidence read at its part, sum_k a_tk psi_g,k(x), exceeds that of the explained
      class's mean fitting image: the image's own part must show it more than the class usually
      does, so that a class's usual "white belly" is not cited for a bird whose belly the image hides.
      The score shown is unchanged; the next attributes take the freed places. Chosen on a validation
      split of cub50's training images by the same criterion as the pooling defaults
      (``results/choose_located.json``: invisible share 0.69% against 1.00%, occlusion 77.4% against
      79.5%, the mAP unchanged).

    The defaults are saywhy's measured best (BENCHMARKS.md); :meth:`paper` gives the
    paper's method with sigma = l1.
    """

    top_k: int = 5
    sigma_activation: str = "top"
    top_fraction: float = 0.1
    filter_scale: str = "none"
    sigma_decision: str = "l1"
    prior: str = "tfidf"
    likelihood: str = "sum"
    contrast: str = "margin"
    min_df: int = 3
    attribute_model: str = "evidence"
    evidence_l2: float = EVIDENCE_L2_PER_TERM
    class_weighting: bool = True
    grounding: str = "signed"
    sentence: str = "natural"
    part_visibility: bool = False
    part_grounding: str = "maps"
    evidence_pooling: str = "auto"
    visibility_threshold: float = 0.8
    visibility_source: str = "peak"
    evidence_smoothing: float = 0.25
    retrieval_score: str = "image"
    located_evidence: bool = True

    def __post_init__(self) -> None:
        choices = {"attribute_model": ATTRIBUTE_MODELS, "grounding": GROUNDINGS, "sentence": SENTENCES,
                   "contrast": CONTRASTS, "sigma_activation": SIGMA_ACTIVATIONS, "sigma_decision": SIGMAS,
                   "filter_scale": FILTER_SCALES, "prior": PRIORS, "likelihood": LIKELIHOODS,
                   "part_grounding": PART_GROUNDINGS, "evidence_pooling": EVIDENCE_POOLINGS,
                   "visibility_source": VISIBILITY_SOURCES, "retrieval_score": RETRIEVAL_SCORES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SaywhyError(f"unknown {name.replace('_', ' ')} {getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        for name in ("top_k", "min_df"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise SaywhyError(f"{name.replace('_', ' ')} must be a whole number of at least 1, got {value!r}")
        if not (isinstance(self.top_fraction, (int, float)) and math.isfinite(self.top_fraction)
                and 0.0 < self.top_fraction <= 1.0):
            raise SaywhyError(f"top fraction must be a number in (0, 1], got {self.top_fraction!r}")
        if not (isinstance(self.evidence_l2, (int, float)) and math.isfinite(self.evidence_l2) and self.evidence_l2 > 0):
            raise SaywhyError(f"evidence L2 must be a finite number above 0, got {self.evidence_l2!r}")
        if not isinstance(self.class_weighting, (bool, np.bool_)):
            raise SaywhyError(f"class weighting must be True or False, got {self.class_weighting!r}")
        if not isinstance(self.located_evidence, (bool, np.bool_)):
            raise SaywhyError(f"located evidence must be True or False, got {self.located_evidence!r}")
        if not isinstance(self.part_visibility, (bool, np.bool_)):
            raise SaywhyError(f"part visibility must be True or False, got {self.part_visibility!r}")
        if isinstance(self.visibility_threshold, bool) or not isinstance(self.visibility_threshold, (int, float)) \
                or not 0.0 <= self.visibility_threshold < 1.0:
            raise SaywhyError(f"visibility threshold must be a number in [0, 1), got {self.visibility_threshold!r}")
        if isinstance(self.evidence_smoothing, bool) or not isinstance(self.evidence_smoothing, (int, float)) \
                or not 0.0 <= self.evidence_smoothing < 1.0:
            raise SaywhyError(f"evidence smoothing must be a number in [0, 1), got {self.evidence_smoothing!r}")

    @property
    def pools_evidence(self) -> bool:
        """Whether a fit reads part-attributes' evidence under part maps (``evidence_pooling`` part or both,
        with the evidence model): such a fit learns the part maps itself."""
        return self.evidence_pooling in ("part", "both") and self.attribute_model == "evidence"

    def for_fit(self, part_maps: bool) -> ExplainerConfig:
        """This config with ``evidence_pooling="auto"`` made what a fit does: :data:`AUTO_POOLING` where the
        fit can learn part maps (``part_maps``: training keypoints, one process) for the evidence model,
        else "global". Other values are kept; a fitted explainer's config never says "auto"."""
        if self.evidence_pooling != "auto":
            return self
        pooled = part_maps and self.attribute_model == "evidence"
        return replace(self, evidence_pooling=AUTO_POOLING if pooled else "global")

    @classmethod
    def paper(cls, **changes: Any) -> ExplainerConfig:
        """The paper's method: p(t|f) of eq. 1-4 with sigma = l1 in eq. 3, 6 and 8, p(t|x,X) against
        p(t|x,Y) for contrasts, and the paper's sentence template."""
        return cls(**{"sigma_activation": "l1", "contrast": "difference", "attribute_model": "cooccurrence",
                      "sentence": "paper", "part_grounding": "none", "evidence_pooling": "global",
                      "visibility_threshold": 0.0, "visibility_source": "pooled", "evidence_smoothing": 0.0,
                      "retrieval_score": "class", "located_evidence": False, **changes})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplainerConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def without_effect(self, given: Iterable[str]) -> list[str]:
        """Of the settings named in ``given``, those the chosen attribute model never reads.

        >>> ExplainerConfig(attribute_model="cooccurrence").without_effect(["evidence_l2", "top_k"])
        ['evidence_l2']
        """
        from saywhy.explain.attribute_models import ATTRIBUTE_MODELS

        others = {s for name, m in ATTRIBUTE_MODELS.items() if name != "cooccurrence" for s in m.settings}
        unused = others - set(ATTRIBUTE_MODELS[self.attribute_model].settings)
        return [name for name in given if name in unused]


@dataclass
class Explanation:
    """Why the network put one image in one class.

    - ``probability``: the network's softmax probability of the class; ``logit`` its raw score.
    - ``attributes``: the top attributes, best first, each with a score in [0, 1] whose
      meaning ``score_name`` states: with the evidence model the calibrated p(t|x) (how
      likely the image's captions name t, from the image alone), with the paper's p(t|f)
      eq. 5's p(t|x,c). Attributes for which the image itself gives no evidence are never
      listed (an all-black image gets none).
    - ``evidence``: with the evidence model, each listed attribute's class-weighted log-odds
      b_t + F sum_k a_tk phi_k p(f_k|x,c), what the ranking uses; None with p(t|f).
    - ``alternatives``: the next most probable classes with their probabilities.
    - ``predicted``: whether ``class_index`` is the network's own decision (False when a
      target class was asked for).
    - ``heatmaps``: with ``explain(..., heatmaps=True)``, where each listed attribute is
      (eq. 9) at layer and at image resolution, with the class's CAM.
    """

    class_index: int
    class_name: str
    sentence: str
    attributes: list[tuple[str, float]]
    logit: float
    probability: float
    score_name: str = ""
    evidence: list[float] | None = None
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    predicted: bool = True
    input: str = ""  # which input this explains (a path, or "tensor[i]"), set by the session
    notes: list[str] = field(default_factory=list)  # what a user must know, e.g. that no box was used
    heatmaps: Any = None  # on request, the attributes' eq. 9 maps (:class:`saywhy.pipeline.Heatmaps`)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the heatmap arrays, JSON-ready."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "heatmaps"}


@dataclass
class Contrast:
    """Why class X and not class Y (the paper's Figure 1)."""

    sentence: str
    favour: list[tuple[str, float]]  # attributes with evidence for X over Y, largest first
    against: list[tuple[str, float]]  # attributes with evidence for Y over X, largest first
    explanation: Explanation
    other: Explanation

    def to_dict(self) -> dict[str, Any]:
        return {"sentence": self.sentence, "favour": self.favour, "against": self.against,
                "explanation": self.explanation.to_dict(), "other": self.other.to_dict()}


@dataclass
class ClassDescription:
    """What the network looks for in a class (eq. 7-8); scores as in :class:`Explanation`."""

    class_index: int
    class_name: str
    sentence: str
    attributes: list[tuple[str, float]] = field(default_factory=list)
    score_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Explainer:
    """Learns how filters tie to attributes and explains decisions with eq. 5-8.

    The explainer owns the loop; an :class:`~saywhy.explain.attribute_models.AttributeModel`
    says what each filter means for each attribute. It works on arrays only (pooled
    activations, the head's weights): :class:`saywhy.pipeline.ExplainerSession` runs the network.

    >>> import numpy as np, scipy.sparse as sp
    >>> pooled = np.array([[5.0, 0.1], [0.1, 5.0]])          # filter 0 fires on image 0
    >>> counts = sp.csr_matrix(np.array([[1, 0], [0, 1]]))  # image 0 says "red crown"
    >>> ex = Explainer(ExplainerConfig(top_k=1, min_df=1)).fit(
    ...     pooled, counts, ["red crown", "blue wing"], weights=np.eye(2), class_names=["A", "B"])
    >>> ex.explain(pooled[:1])[0].sentence
    'This is an A because it has red crown.'
    """

    def __init__(self, config: ExplainerConfig = ExplainerConfig()):
        self.config = config

    # ----- fitting ---------------------------------------------------------------------
    def fit(self, pooled: np.ndarray, term_counts: sp.spmatrix, vocabulary: list[str], weights: np.ndarray,
            class_names: list[str], bias: np.ndarray | None = None, metadata: dict[str, Any] | None = None,
            surface_forms: SurfaceForms | None = None, synonyms: SynonymGroups | None = None) -> Explainer:
        """Learn p(t|f) and the chosen attribute model from the fitting images.

        ``pooled`` (images x filters) and ``term_counts`` (images x attributes, TF per
        caption file) must describe the same images in the same order; ``weights`` is the
        linear head's (classes x filters) matrix; ``surface_forms`` say how the captions
        write each noun (for ``sentence="natural"``).
        """
        pooled = _finite(np.asarray(pooled, dtype=np.float64), "the fitting images' activations")
        weights = _finite(np.asarray(weights, dtype=np.float64), "the head's weights")
        bias = np.zeros(weights.shape[0]) if bias is None else _finite(np.asarray(bias, dtype=np.float64), "the head's bias")
        if weights.ndim != 2 or weights.shape[1] != pooled.shape[1]:
            raise SaywhyError(f"head has {weights.shape[-1]} inputs but activations have {pooled.shape[1]} filters")
        if len(class_names) != weights.shape[0]:
            raise SaywhyError(
                f"model predicts {weights.shape[0]} classes but the dataset has {len(class_names)}: "
                "use the checkpoint trained on this dataset, or a dataset with the model's classes"
            )
        if len(vocabulary) == 0 or term_counts.shape[1] != len(vocabulary):
            raise SaywhyError("empty attribute vocabulary: lower --min-df or give images with captions")
        if term_counts.shape[0] != pooled.shape[0]:
            raise SaywhyError(f"{term_counts.shape[0]} images have attributes but {pooled.shape[0]} have activations: "
                              "pass the same images, in the same order, to both")
        counts = sp.csr_matrix(term_counts)
        rows = 4096
        return self.fit_chunks(lambda: ((pooled[i:i + rows], counts[i:i + rows]) for i in range(0, len(pooled), rows)),
                               vocabulary, weights, class_names, bias, metadata, surface_forms, synonyms=synonyms)

    def fit_chunks(self, chunks: FitChunks, vocabulary: list[str], weights: np.ndarray, class_names: list[str],
                   bias: np.ndarray | None = None, metadata: dict[str, Any] | None = None,
                   surface_forms: SurfaceForms | None = None, combine: Combine = Combine(),
                   synonyms: SynonymGroups | None = None) -> Explainer:
        """:meth:`fit` on images read chunk by chunk (``chunks()`` yields (pooled, term counts) row
        chunks, the same each time): memory grows with one chunk, never with the images.

        ``combine`` adds this process's sums to the other processes' (``saywhy.distributed``);
        every statistic the fit needs is a sum, a maximum or a set of largest values over images.
        """
        weights = _finite(np.asarray(weights, dtype=np.float64), "the head's weights")
        bias = np.zeros(weights.shape[0]) if bias is None else _finite(np.asarray(bias, dtype=np.float64), "the head's bias")
        if len(class_names) != weights.shape[0]:
            raise SaywhyError(
                f"model predicts {weights.shape[0]} classes but the dataset has {len(class_names)}: "
                "use the checkpoint trained on this dataset, or a dataset with the model's classes"
            )
        if len(vocabulary) == 0:
            raise SaywhyError("empty attribute vocabulary: lower --min-df or give images with captions")
        n_filters, n_classes = weights.shape[1], weights.shape[0]
        self.config = self.config.for_fit(part_maps=False)  # pooling under part maps is fit_part_evidence's
        # One pass for what is checked and summed per image: the count, the class sums of eq. 7-8.
        class_sums, class_counts = np.zeros((n_classes, n_filters)), np.zeros(n_classes)
        for pooled, counts in chunks():
            pooled = _finite(np.asarray(pooled, dtype=np.float64), "the fitting images' activations")
            if pooled.ndim != 2 or pooled.shape[1] != n_filters:
                raise SaywhyError(f"head has {n_filters} inputs but activations have {pooled.shape[-1]} filters")
            if counts.shape[1] != len(vocabulary):
                raise SaywhyError("empty attribute vocabulary: lower --min-df or give images with captions")
            if counts.shape[0] != pooled.shape[0]:
                raise SaywhyError(f"{counts.shape[0]} images have attributes but {pooled.shape[0]} have activations: "
                                  "pass the same images, in the same order, to both")
            predicted = (pooled @ weights.T + bias).argmax(axis=1)
            np.add.at(class_sums, predicted, pooled)
            class_counts += np.bincount(predicted, minlength=n_classes)
        sums = combine.sum(np.concatenate([class_sums.ravel(), class_counts]))
        class_sums, class_counts = sums[:-n_classes].reshape(n_classes, n_filters), sums[-n_classes:]
        n_images = int(class_counts.sum())
        self._weights, self._bias = weights, bias
        self.vocabulary_, self.class_names_ = list(vocabulary), list(class_names)
        self.metadata_ = dict(metadata or {})
        self.surface_forms_ = surface_forms or SurfaceForms()
        self.synonyms_ = synonyms if synonyms is not None else SynonymGroups([], "none")
        self.n_images_ = n_images
        shape = (chunks, n_filters, len(vocabulary), n_images, combine)
        self.cooccurrence_ = CooccurrenceModel(self.config).fit_chunks(*shape)
        self.attribute_model_ = (self.cooccurrence_ if self.config.attribute_model == CooccurrenceModel.name
                                 else attribute_model(self.config.attribute_model, self.config).fit_chunks(
                                     *shape, head=(weights, bias)))
        # eq. 7-8 with the evidence model needs activations for a class: the mean of the fitting
        # images the network puts in that class (the overall mean where it puts none).
        overall = class_sums.sum(axis=0) / n_images if n_images else np.zeros(n_filters)
        self.class_mean_pooled_ = np.stack([class_sums[c] / class_counts[c] if class_counts[c] else overall
                                            for c in range(n_classes)])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "attribute_model_"):
            raise SaywhyError("this explainer is not fitted: call fit() or load a fitted one ('saywhy fit')")

    # ----- read-only fitted state -------------------------------------------------------
    @property
    def head_weights_(self) -> np.ndarray:
        """The linear head's W (classes x filters), read-only."""
        self._check_fitted()
        return _read_only(self._weights)

    @property
    def head_bias_(self) -> np.ndarray:
        self._check_fitted()
        return _read_only(self._bias)

    @property
    def filter_attribute_pdf_(self) -> np.ndarray:
        """The paper's p(t|f) (filters x attributes), read-only; fitted with either attribute model."""
        self._check_fitted()
        return _read_only(self.cooccurrence_.pdf_)

    @property
    def n_filters_(self) -> int:
        self._check_fitted()
        return int(self._weights.shape[1])

    @property
    def score_name(self) -> str:
        """What the per-attribute scores of explanations are."""
        self._check_fitted()
        return self.attribute_model_.score_name

    def unnormalized_filter_pdf(self, filter_index: int) -> np.ndarray:
        """Eq. 1 before normalizing, p(t) sum_x p(f|x) p(x|t), for one filter (the bars of Figure 5)."""
        self._check_fitted()
        return self.cooccurrence_.unnormalized(filter_index)

    # ----- the network's decision, from pooled activations ---------------------------------
    def decision_function(self, pooled: np.ndarray) -> np.ndarray:
        """The head's logits W phi + b (images x classes), recomputed exactly from pooled activations."""
        self._check_fitted()
        return self._head_logits(self._pooled(pooled, evidence=False))

    def _head_logits(self, pooled: np.ndarray) -> np.ndarray:
        """:meth:`decision_function` of activations :meth:`_pooled` checked already."""
        with np.errstate(over="ignore", invalid="ignore"):
            logits = pooled[:, :self._weights.shape[1]] @ self._weights.T + self._bias
        return _finite(logits, "the class scores computed from these activations (they overflow)")

    logits = decision_function

    def predict(self, pooled: np.ndarray) -> np.ndarray:
        """The head's decision: argmax(W phi + b)."""
        return self.decision_function(pooled).argmax(axis=1)

    def predict_proba(self, pooled: np.ndarray) -> np.ndarray:
        """Softmax of the logits: the network's class probabilities (images x classes)."""
        return softmax(self.decision_function(pooled), axis=1)

    def _pooled(self, pooled: np.ndarray, evidence: bool = True) -> np.ndarray:
        """The activations checked: (images, F) pooled filters, or with part pooling (images, F (1 + G)),
        phi(x) then the part pools (:meth:`part_pools`), which ``evidence`` (the attribute scores) needs;
        with ``visibility_source="peak"`` each part's peak log-odds may follow (:meth:`map_activations`)."""
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        f = self._weights.shape[1]
        width, full = self.feature_width_, self.activation_width_
        allowed = {width, full} if evidence else {f, width, full}
        if pooled.ndim != 2 or pooled.shape[1] not in allowed:
            read = [what for what, used in (("its part pools", self.pools_parts), ("its parts' peaks", self.reads_peaks))
                    if used]
            more = f" (phi(x) and {' and '.join(read)}: explain through ExplainerSession, which computes them from the " \
                   "maps)" if read else " pooled filters: is this the network it was fitted on?"
            raise SaywhyError(f"activations have shape {pooled.shape} but the explainer expects (images, {full})" + more)
        return _finite(pooled, "the image's activations")

    def _features(self, pooled: np.ndarray) -> np.ndarray:
        """What the attribute model scores: the checked activations without the parts' peaks, if any."""
        return pooled[:, :self.feature_width_]

    def _classes(self, pooled: np.ndarray, classes: Any) -> np.ndarray:
        if classes is None:
            return self.predict(pooled)
        if hasattr(classes, "tolist"):  # numpy arrays, torch tensors
            classes = classes.tolist()
        if isinstance(classes, (str, int)):
            classes = [classes] * len(pooled)
        classes = list(classes)
        if len(classes) != len(pooled):
            raise SaywhyError(f"{len(classes)} target classes for {len(pooled)} images: give one class, or one per image")
        return np.array([self.class_index(c) for c in classes], dtype=int)  # names or indices, range-checked

    # ----- eq. 5-8 ---------------------------------------------------------------------
    def class_index(self, name_or_index: str | int) -> int:
        """A class by 0-based index, raw name ("001.Black_footed_Albatross") or readable name."""
        self._check_fitted()
        if isinstance(name_or_index, (int, np.integer)) and not isinstance(name_or_index, bool):
            if not 0 <= name_or_index < len(self.class_names_):
                raise SaywhyError(f"class index {name_or_index} is out of range 0..{len(self.class_names_) - 1}")
            return int(name_or_index)
        if isinstance(name_or_index, str) and name_or_index.strip().isdigit():
            return self.class_index(int(name_or_index))
        wanted = _normalize(str(name_or_index))
        for i, raw in enumerate(self.class_names_):
            if wanted in (_normalize(raw), _normalize(readable_class_name(raw))):
                return i
        close = [readable_class_name(n) for n in self.class_names_ if wanted[:4] in _normalize(n)][:5]
        raise SaywhyError(f"unknown class {name_or_index!r}; similar: {', '.join(close) or 'none'} ('saywhy describe --list' lists all)")

    def readable_name(self, index: int) -> str:
        return self.readable_names()[index]

    def readable_names(self) -> tuple[str, ...]:
        """Every class's readable name, made once per list of class names."""
        memo = getattr(self, "_names_memo", None)  # (class names, readable names): the list they were made from
        if memo is None or memo[0] is not self.class_names_:
            memo = (self.class_names_, tuple(readable_class_name(n) for n in self.class_names_))
            self._names_memo = memo
        return memo[1]

    def filter_given_image_class(self, pooled: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Eq. 6: p(f|x_i, c_i) (images x filters)."""
        phi = np.atleast_2d(np.asarray(pooled, np.float64))[:, :self._weights.shape[1]]
        return filter_given_image_class(phi, self._weights[classes], self.config.sigma_decision)

    def scores(self, pooled: np.ndarray, classes: Any = None) -> Scores:
        """Eq. 5 for each image and its class (the prediction by default): p, log p, own evidence."""
        self._check_fitted()
        pooled = self._pooled(pooled)
        classes = self._classes(pooled, classes)
        return self.attribute_model_.scores(self._features(pooled), self.filter_given_image_class(pooled, classes))

    def attribute_pdf(self, pooled: np.ndarray, classes: Any = None) -> np.ndarray:
        """Eq. 5-6: p(t|x_i, c_i) for each image (images x attributes); classes default to predictions."""
        return self.scores(pooled, classes).p

    def attribute_log_pdf(self, pooled: np.ndarray, classes: Any = None) -> np.ndarray:
        """log p(t|x_i, c_i), what rankings use: the evidence model's probabilities round to exactly 1
        for strong evidence, its log-probabilities keep the order (log sigmoid(z) = -log(1 + e^-z))."""
        return self.scores(pooled, classes).log_p

    def retrieval_log_scores(self, pooled: np.ndarray, classes: Any = None) -> np.ndarray:
        """(images x attributes) what image retrieval ranks by, in log units (``config.retrieval_score``):
        eq. 5's log p(t|x, c), or the log of the score the explanations show (:meth:`readable_scores`)."""
        if self.config.retrieval_score == "class":
            return self.attribute_log_pdf(pooled, classes)
        self._check_fitted()
        pooled = self._pooled(pooled)
        log = self.attribute_model_.readable_log(self._features(pooled), self.scores(pooled, classes))
        return log + np.log(np.maximum(self.attribute_visibility(pooled), 1e-300)) if self._gated() else log

    def readable_scores(self, pooled: np.ndarray, classes: Any = None) -> np.ndarray:
        """(images x attributes) the scores explanations show, in [0, 1] (see ``score_name``)."""
        self._check_fitted()
        pooled = self._pooled(pooled)
        readable = self.attribute_model_.readable(self._features(pooled), self.scores(pooled, classes))
        return readable * self.attribute_visibility(pooled) if self._gated() else readable

    def class_ranking(self) -> np.ndarray:
        """Eq. 7-8 for every class (classes x attributes), in log units (the order survives rounding)."""
        self._check_fitted()
        means = self.class_mean_pooled_
        every = np.arange(len(self.class_names_))
        return self.attribute_model_.class_ranking(means, self.filter_given_image_class(means, every),
                                                   filter_given_class(self._weights, self.config.sigma_decision))

    def grounding_alphas(self) -> np.ndarray:
        """Eq. 9's alpha for every attribute (filters x attributes)."""
        self._check_fitted()
        return self.attribute_model_.grounding_alphas(self.vocabulary_, self.cooccurrence_.statistics_.attribute_images)

    def filter_shares(self, pooled: np.ndarray, classes: np.ndarray, attributes: np.ndarray) -> np.ndarray:
        """(images x filters): how much each filter carries the given attributes (one row of indices per
        image) in eq. 5: p(f_k|x,c) sum_t p(t|f_k), or p(f_k|x,c) times the filter's positive evidence."""
        self._check_fitted()
        pooled = self._pooled(pooled)
        classes = self._classes(pooled, classes)
        return self.attribute_model_.filter_shares(self._features(pooled), self.filter_given_image_class(pooled, classes),
                                                   attributes)

    # ----- part maps learned from training keypoints ------------------------------------
    def set_part_maps(self, part_maps: PartMaps, attribute_parts: dict[str, list[str]],
                      settings: dict[str, Any] | None = None) -> Explainer:
        """Attach fitted :class:`~saywhy.core.part_maps.PartMaps`; ``attribute_parts`` maps vocabulary
        terms to the part names they name (terms left out name no part). Returns ``self``."""
        self._check_fitted()
        part_maps._check()
        if getattr(self, "pooling_groups_", None) is not None and part_maps is not self.part_maps_:
            raise SaywhyError("this explainer's evidence is pooled under its part maps: refit it to use others")
        index = {p: i for i, p in enumerate(part_maps.parts_)}
        if part_maps.location_weights_.shape[1] != self.n_filters_:
            raise SaywhyError(f"part maps have {part_maps.location_weights_.shape[1]} filters but the explainer "
                              f"{self.n_filters_}: fit them on the same network")
        self.part_maps_ = part_maps
        self.attribute_parts_ = {t: [p for p in parts if p in index] for t, parts in attribute_parts.items()
                                 if t in set(self.vocabulary_) and any(p in index for p in parts)}
        self.part_maps_settings_ = dict(settings or {})
        return self

    @property
    def has_part_maps(self) -> bool:
        return getattr(self, "part_maps_", None) is not None

    # ----- part-pooled evidence (config.evidence_pooling "part" or "both") -------------------
    @property
    def pools_parts(self) -> bool:
        """Whether the evidence of part-attributes is read from part-pooled maps (:meth:`fit_part_evidence`
        done): the activations this explainer scores are then phi(x) and the part pools, :meth:`part_pools`."""
        return getattr(self, "pooling_groups_", None) is not None and self.has_part_maps

    @property
    def feature_width_(self) -> int:
        """Columns of the activations the attribute scores take: F, or F (1 + G) with G part pools."""
        self._check_fitted()
        f = int(self._weights.shape[1])
        return f * (1 + len(self.pooling_groups_)) if self.pools_parts else f

    def _pooling_groups(self) -> list[tuple[str, ...]]:
        fitted = getattr(self, "pooling_groups_", None)
        if fitted is not None:
            return fitted
        return sorted({tuple(sorted(parts)) for parts in self.attribute_parts_.values()})

    @property
    def needs_part_pools(self) -> bool:
        """Whether :meth:`part_pools` adds part pools (part pooling asked for, part maps attached)."""
        return self.config.evidence_pooling != "global" and self.has_part_maps and bool(self._pooling_groups())

    def part_pools(self, maps: np.ndarray, pooled: np.ndarray) -> np.ndarray:
        """(N, F (1 + G)): ``pooled`` phi(x) (N, F), then per part group its part-pooled maps psi_g(x)
        from the (N, F, h, w) ``maps`` (:mod:`saywhy.core.part_pooling`); ``pooled`` itself where part
        pooling is off or there are no part maps."""
        self._check_fitted()
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        if not self.needs_part_pools:
            return pooled
        maps = self._maps_for(maps, len(pooled), "part pooling needs")
        return self._part_pools(maps, pooled, self.part_maps_.part_scores(maps))

    def _part_pools(self, maps: np.ndarray, pooled: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """:meth:`part_pools` from the maps' part ``scores`` (:meth:`PartMaps.part_scores`), computed once
        for the pools and the peaks; float32 maps are pooled in float32."""
        index = {p: i for i, p in enumerate(self.part_maps_.parts_)}
        groups = [[index[p] for p in group] for group in self._pooling_groups()]
        pools = part_pooled(maps, part_pooling_weights(scores, groups)).reshape(len(pooled), len(groups) * maps.shape[1])
        return np.concatenate([pooled, pools], axis=1)

    def _maps_for(self, maps: np.ndarray, n_images: int, what: str) -> np.ndarray:
        """``maps`` as an array, refused unless (n_images, F, h, w): ``what`` starts the error line."""
        maps = np.asarray(maps)
        if maps.ndim != 4 or maps.shape[0] != n_images or maps.shape[1] != self._weights.shape[1]:
            raise SaywhyError(f"{what} (images, {self._weights.shape[1]}, h, w) maps for {n_images} "
                              f"images, got shape {maps.shape}")
        return maps

    def fit_part_evidence(self, features: np.ndarray, term_counts: sp.spmatrix) -> Explainer:
        """Refit the evidence of every attribute naming a part on its part group's pool, from the fitting
        images' :meth:`part_pools` ``features`` and ``term_counts`` (the images and vocabulary of
        :meth:`fit`, in the same order); eq. 7-8's class means become those of the features."""
        self._check_fitted()
        if not self.needs_part_pools or self.config.attribute_model != "evidence":
            raise SaywhyError("part-pooled evidence needs the evidence model, evidence_pooling='part' and part maps")
        groups = self._pooling_groups()
        features = _finite(np.atleast_2d(np.asarray(features, np.float64)), "the part-pooled activations")
        f = int(self._weights.shape[1])
        if features.shape[1] != f * (1 + len(groups)) or sp.csr_matrix(term_counts).shape != (len(features),
                                                                                              len(self.vocabulary_)):
            raise SaywhyError(f"part-pooled evidence needs (images, {f * (1 + len(groups))}) features and "
                              f"(images, {len(self.vocabulary_)}) term counts, got {features.shape} and "
                              f"{sp.csr_matrix(term_counts).shape}")
        position = {group: g for g, group in enumerate(groups)}
        sources = np.array([position.get(tuple(sorted(self.attribute_parts_.get(t, ()))), -1) for t in self.vocabulary_])
        predicted = (features[:, :f] @ self._weights.T + self._bias).argmax(axis=1)  # the head reads phi(x)
        self.attribute_model_.fit_parts(features, term_counts, sources, classes=predicted)
        self.pooling_groups_ = groups
        overall = features.mean(axis=0)
        self.class_mean_pooled_ = np.stack([features[predicted == c].mean(axis=0) if np.any(predicted == c) else overall
                                            for c in range(len(self.class_names_))])
        return self

    # ----- part visibility read from the maps (config.visibility_source "peak") ---------------
    @property
    def reads_peaks(self) -> bool:
        """Whether part visibility comes from the location maps' peaks (``visibility_source="peak"``, part
        maps attached): the activations this explainer takes then end with one peak log-odds per part."""
        return self.config.visibility_source in ("peak", "both") and self.has_part_maps

    @property
    def reads_maps(self) -> bool:
        """Whether the activations this explainer takes are computed from the maps (part pools, peaks,
        :meth:`map_activations`): a session reads them from the feature cache's folder for this explainer's
        part maps (:meth:`map_rows_key`), or runs a forward pass with the maps where they are not there."""
        return self.pools_parts or self.reads_peaks

    @property
    def activation_width_(self) -> int:
        """Columns of the activations :meth:`explain` takes: :attr:`feature_width_`, then one peak log-odds
        per part when visibility is read from the peaks."""
        return self.feature_width_ + (len(self.part_maps_.parts_) if self.reads_peaks else 0)

    def map_activations(self, maps: np.ndarray, pooled: np.ndarray) -> np.ndarray:
        """(N, :attr:`activation_width_`): :meth:`part_pools` of the (N, F, h, w) ``maps``, then each part's
        peak log-odds (:meth:`PartMaps.peak_log_odds`) when visibility is read from them."""
        if not self.reads_peaks:
            return self.part_pools(maps, pooled)
        self._check_fitted()
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        maps = self._maps_for(maps, len(pooled), "part peaks need")
        scores = self.part_maps_.part_scores(maps)  # once, for the pools and the peaks
        features = self._part_pools(maps, pooled, scores) if self.needs_part_pools else pooled
        peaks = np.asarray(scores.reshape(len(maps), scores.shape[1], -1).max(axis=2), np.float64)
        return np.concatenate([features, _finite(peaks, "the part maps' peaks computed from these maps")], axis=1)

    def map_rows_key(self) -> str:
        """A digest of what this explainer's :meth:`map_activations` rows depend on besides the network, the
        layer, the preprocessing and the image: its part maps and settings. A feature cache keeps such rows
        under it (``saywhy.model.feature_cache.MapRows``), so another explainer's rows are never served."""
        self._check_fitted()
        digest = hashlib.sha256(repr((self.part_maps_.parts_, self._pooling_groups() if self.pools_parts else None,
                                      self.reads_peaks, self.activation_width_)).encode())
        for name, array in sorted(self.part_maps_.arrays().items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array, np.float64).tobytes())
        return digest.hexdigest()[:16]

    @property
    def gates_visibility(self) -> bool:
        """Whether explanations multiply part-attributes' scores by their part's visibility."""
        return bool(self.config.part_visibility) and self.has_part_maps

    def _gated(self) -> bool:
        return self.gates_visibility

    def attribute_visibility(self, pooled: np.ndarray) -> np.ndarray:
        """(images x attributes): the probability that the attribute's part shows (the largest over the
        parts its noun names, as a part is visible when any of its keypoints is); 1 for attributes that
        name no part, and for every attribute without part maps."""
        self._check_fitted()
        pooled = self._pooled(pooled, evidence=False)
        out = np.ones((len(pooled), len(self.vocabulary_)))
        if not self.has_part_maps:
            return out
        if self.reads_peaks:
            if pooled.shape[1] != self.activation_width_:
                raise SaywhyError("this explainer reads part visibility from the part maps' peaks, which these "
                                  "activations lack: explain through ExplainerSession, which computes them from the maps")
            parts = self.part_maps_.peak_visibility(pooled[:, self.feature_width_:])
            if self.config.visibility_source == "both":  # shown only where both say so
                parts = np.minimum(parts, self.part_maps_.visibility(pooled[:, :self._weights.shape[1]]))
        else:
            parts = self.part_maps_.visibility(pooled[:, :self._weights.shape[1]])
        columns, part_index = self._visibility_index()
        if len(columns):
            out[:, columns] = parts[:, part_index].max(axis=2)
        return _finite(out, "the part visibility computed from these activations")

    def _visibility_index(self) -> tuple[np.ndarray, np.ndarray]:
        """The vocabulary columns that name a part, and per column its parts' indices (padded by repeating
        the first: a maximum is unchanged), made once per attached part maps: a loop over the vocabulary
        per call cost 3.3 ms of a one-image cub50 explain."""
        key = (id(self.part_maps_), id(self.attribute_parts_), len(self.vocabulary_))
        if getattr(self, "_visibility_memo", (None,))[0] != key:
            index = {p: i for i, p in enumerate(self.part_maps_.parts_)}
            rows = [(j, [index[p] for p in self.attribute_parts_[t]]) for j, t in enumerate(self.vocabulary_)
                    if t in self.attribute_parts_]
            width = max((len(parts) for _, parts in rows), default=1)
            columns = np.array([j for j, _ in rows], dtype=np.intp)
            part_index = np.array([parts + parts[:1] * (width - len(parts)) for _, parts in rows],
                                  dtype=np.intp).reshape(len(rows), width)
            self._visibility_memo = (key, columns, part_index)
        return self._visibility_memo[1], self._visibility_memo[2]

    def part_heatmaps(self, maps: np.ndarray, attributes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """For one image's (F, h, w) maps: (T, h, w) log-odds that each attribute's part is at each cell
        (the largest over its parts), and a (T,) mask of the attributes that have one (rows of the
        others are 0); for N images' (N, F, h, w) maps, (N, T, h, w) and the same mask."""
        self._check_fitted()
        maps = np.asarray(maps)
        out, known = np.zeros((*maps.shape[:-3], len(attributes), *maps.shape[-2:])), np.zeros(len(attributes), bool)
        if not self.has_part_maps:
            return out, known
        index = {p: i for i, p in enumerate(self.part_maps_.parts_)}
        wanted = sorted({index[p] for term in attributes for p in self.attribute_parts_.get(term, ())})
        if not wanted:
            return out, known
        scores = self.part_maps_.part_scores(maps, wanted)  # only the parts these attributes name
        row = {p: r for r, p in enumerate(wanted)}
        for i, term in enumerate(attributes):
            parts = self.attribute_parts_.get(term)
            if parts:
                out[..., i, :, :], known[i] = scores[..., [row[index[p]] for p in parts], :, :].max(axis=-3), True
        return out, known

    def grounding_scores(self, maps: np.ndarray, alpha: np.ndarray, attributes: list[str]) -> np.ndarray:
        """(T, h, w) heatmap scores of ``attributes`` on one image's (F, h, w) maps (or (N, T, h, w) on N
        images' (N, F, h, w)): eq. 9 with ``alpha`` (T, F), or the part maps as ``config.part_grounding``
        says (:func:`part_grounding_scores`)."""
        scores = attribute_scores(maps, alpha)
        if self.config.part_grounding == "none" or not self.has_part_maps:
            return scores
        part, known = self.part_heatmaps(maps, list(attributes))
        return part_grounding_scores(scores, part, known, self.config.part_grounding)

    # ----- sentences -------------------------------------------------------------------
    def explain(self, pooled: np.ndarray, classes: Any = None) -> list[Explanation]:
        """One explanation per image: "This is a X because it has ...", for the given or predicted class.

        ``classes``: None (the network's decision), one class for all images, or one per image.
        """
        self._check_fitted()
        pooled = self._pooled(pooled)
        if len(pooled) > EXPLAIN_BLOCK:  # a block at a time: the (images x attributes) scores never grow with the run
            classes = None if classes is None else self._classes(pooled, classes)
            return [e for start in range(0, len(pooled), EXPLAIN_BLOCK) for e in self.explain(
                pooled[start:start + EXPLAIN_BLOCK], None if classes is None else classes[start:start + EXPLAIN_BLOCK])]
        logits = self._head_logits(pooled)  # once: the decision, the probabilities and the printed logit
        proba, predicted = softmax(logits, axis=1), logits.argmax(axis=1)
        classes = predicted if classes is None else self._classes(pooled, classes)
        p_filter = self.filter_given_image_class(pooled, classes)
        features = self._features(pooled)  # what the attribute model scores (no part peaks)
        scores, visibility, orders = self._citations(pooled, features, p_filter, classes)
        # the readable score only where it is printed: the cited attributes, not the whole vocabulary
        rows = np.array([i for i, order in enumerate(orders) for _ in order], dtype=np.intp)
        columns = np.array([j for order in orders for j in order], dtype=np.intp)
        with np.errstate(over="ignore", invalid="ignore"):
            readable = self.attribute_model_.readable_at(features, scores, rows, columns)
            if visibility is not None:
                readable = readable * visibility[rows, columns]
            evidence = self.attribute_model_.evidence_at(features, p_filter, rows, columns)
        _finite(readable, "the attribute scores computed from these activations (they overflow)")
        printed = iter(readable.tolist())
        printed_evidence = None if evidence is None else iter(_finite(evidence, "the attribute evidence").tolist())
        names = self.readable_names()
        runners_up = np.argsort(-proba, axis=1, kind="stable")[:, :4].tolist()  # the class and three others
        proba_rows, logit_rows = proba.tolist(), logits.tolist()
        out = []
        for i, c in enumerate(classes.tolist()):
            order = orders[i]
            top = [(self.vocabulary_[j], next(printed)) for j in order]
            others = [k for k in runners_up[i] if k != c][:3]
            out.append(Explanation(
                c, names[c], self._because(names[c], [t for t, _ in top]), top, logit_rows[i][c], proba_rows[i][c],
                self.attribute_model_.score_name,
                None if printed_evidence is None else [next(printed_evidence) for _ in order],
                [(names[k], proba_rows[i][k]) for k in others], c == int(predicted[i])))
        return out

    def _citations(self, pooled: np.ndarray, features: np.ndarray, p_filter: np.ndarray,
                   classes: np.ndarray) -> tuple[Any, Any, list]:
        """(scores, visibility or None, per image the cited attribute indices best first): what :meth:`explain`
        cites for the explained ``classes`` and :meth:`cited_mask` reports, from one ranking."""
        with np.errstate(over="ignore", invalid="ignore"):
            scores = self.attribute_model_.ranked(features, p_filter)  # the order; printed numbers come exactly below
        if np.isnan(scores.log_p).any() or (scores.evidence is not None and not np.isfinite(scores.evidence).all()):
            raise SaywhyError("the attribute evidence computed from these activations overflows: they are far outside "
                              "what the explainer was fitted on; check the network and the preprocessing")
        rank_by, visibility, hidden = scores.log_p, None, None
        if self._gated():  # a part the image likely hides is neither shown as likely nor ranked high
            visibility = self.attribute_visibility(pooled)
            rank_by = scores.log_p + np.log(np.maximum(visibility, 1e-12))
        if self.config.visibility_threshold > 0 and self.has_part_maps:  # nor cited at all below the threshold
            hidden = (self.attribute_visibility(pooled) if visibility is None else visibility) \
                < self.config.visibility_threshold
        forms = self._forms()
        unsaid = self._unsaid(forms)
        # vague words ("particular bird") never take a place in a natural sentence, nor parts hidden below the
        # threshold: they sort last, so the first top_k are the best top_k of the others
        excluded = None if unsaid is None and hidden is None else \
            (np.zeros(rank_by.shape, bool) if hidden is None else hidden) | (False if unsaid is None else unsaid[None])
        keys = -rank_by if excluded is None else np.where(excluded, np.inf, -rank_by)
        located = self.config.located_evidence and self.pools_parts  # nor where its part shows less than its class's mean
        tops = self._located_tops(features, classes, keys) if located else first_k_stable(keys, self.config.top_k)
        orders = []
        for i, top in enumerate(tops):
            cited = scores.own[i, top] > 0  # only attributes the image gives evidence for
            if excluded is not None:
                cited &= ~excluded[i, top]
            orders.append(top[cited].tolist())
        return scores, visibility, orders

    def _located_tops(self, features: np.ndarray, classes: np.ndarray, keys: np.ndarray) -> list[np.ndarray]:
        """Per image the first top_k attributes in the stable order of ``keys`` that are not excluded (finite
        keys) and that ``located_evidence`` keeps: the rule is read only for the first
        :data:`LOCATED_CANDIDATES` x top_k of them (a product per pair, not per attribute: over the whole
        vocabulary it cost 0.7 ms of a 1 ms one-image cub50 explanation), and for the whole row of an image
        where fewer than top_k of those pass."""
        model, top_k, means = self.attribute_model_, self.config.top_k, self.class_mean_pooled_
        classes = np.asarray(classes)
        width = min(keys.shape[1], LOCATED_CANDIDATES * top_k)
        candidates = first_k_stable(keys, width)
        rows = np.repeat(np.arange(len(keys)), [len(c) for c in candidates])
        columns = np.concatenate(candidates) if candidates else np.zeros(0, np.intp)
        located = model.located_at(features, means, classes, rows, columns)
        if located is None:
            return first_k_stable(keys, top_k)
        passed = (located & np.isfinite(keys[rows, columns])).tolist()
        tops, start = [], 0
        for i, row in enumerate(candidates):
            kept = row[passed[start:start + len(row)]]
            start += len(row)
            if len(kept) < top_k and width < keys.shape[1]:  # too few passed among the first: the whole row
                whole = np.where(model.located(features[i:i + 1], means, classes[i:i + 1])[0], keys[i], np.inf)
                kept = first_k_stable(whole[None], top_k)[0]
                kept = kept[np.isfinite(whole[kept])]
            tops.append(kept[:top_k])
        return tops

    def cited_mask(self, pooled: np.ndarray, classes: Any = None) -> np.ndarray:
        """(images x attributes) True where :meth:`explain` cites the attribute for the image (and its given or
        predicted class): the same ranking, visibility threshold, vague words and evidence rule, without
        the sentences. What search and retrieval's set decision call "in the explanation"."""
        self._check_fitted()
        pooled = self._pooled(pooled)
        classes = None if classes is None else self._classes(pooled, classes)
        mask = np.zeros((len(pooled), len(self.vocabulary_)), bool)
        for start in range(0, len(pooled), EXPLAIN_BLOCK):  # as explain() goes: the scores never grow with the run
            block = pooled[start:start + EXPLAIN_BLOCK]
            chosen = self._head_logits(block).argmax(axis=1) if classes is None else classes[start:start + EXPLAIN_BLOCK]
            _, _, orders = self._citations(block, self._features(block), self.filter_given_image_class(block, chosen),
                                           chosen)
            for i, order in enumerate(orders):
                mask[start + i, order] = True
        return mask

    def contrast_scores(self, pooled: np.ndarray, a: int, b: int) -> np.ndarray:
        """Per attribute, evidence for class ``a`` over ``b`` in one image (negative: for ``b``).

        "difference": eq. 5 for both classes, subtracted. "margin": eq. 5 with eq. 6
        re-weighted by the logit margin phi_k (w_a,k - w_b,k), for a minus for b. The
        evidence model subtracts log-odds (its probabilities round to 1 for strong
        evidence on both sides); p(t|f) subtracts probabilities. Filters are weighted by
        eq. 6 even with ``class_weighting=False``, which concerns explanations only.
        """
        self._check_fitted()
        pooled = self._one(pooled)
        model, sigma = self.attribute_model_, self.config.sigma_decision
        if self.config.contrast == "difference":
            for_a, for_b = self.filter_given_image_class(pooled, [a]), self.filter_given_image_class(pooled, [b])
        else:
            margin = (self._weights[a] - self._weights[b])[None, :]
            phi = pooled[:, :self._weights.shape[1]]  # without the part pools, if any
            for_a = filter_given_image_class(phi, margin, sigma)
            for_b = filter_given_image_class(phi, -margin, sigma)
        features = self._features(pooled)
        return (model.contrast_units(features, for_a) - model.contrast_units(features, for_b))[0]

    def contrast(self, pooled: np.ndarray, class_a: str | int, class_b: str | int, k: int = 3) -> Contrast:
        """Why class A and not class B for one image: the attributes with most evidence for each side."""
        a, b = self.class_index(class_a), self.class_index(class_b)
        if a == b:
            raise SaywhyError(f"cannot contrast {self.readable_name(a)} with itself: choose another class to compare with")
        pooled = self._one(pooled)
        scores = self.contrast_scores(pooled, a, b)
        favour, against = self._top(scores, k), self._top(-scores, k)
        sentence = contrast_sentence(self.readable_name(a), self.readable_name(b),
                                     [t for t, _ in favour], [t for t, _ in against], self._forms())
        return Contrast(sentence, favour, against, self.explain(pooled, [a])[0], self.explain(pooled, [b])[0])

    def _one(self, pooled: np.ndarray) -> np.ndarray:
        pooled = self._pooled(pooled)
        if len(pooled) != 1:
            raise SaywhyError(f"a contrast explains one image at a time, got {len(pooled)}: contrast each image on its own")
        return pooled

    def _top(self, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.vocabulary_[j], float(scores[j])) for j in order if scores[j] > 0]

    def describe(self, class_: str | int) -> ClassDescription:
        """Class-level description (eq. 7-8): what the network looks for in a class, ranked by log p(t|c)."""
        c = self.class_index(class_)
        ranking = self.class_ranking()[c]
        order = np.argsort(-ranking, kind="stable")
        forms = self._forms()
        if forms is not None and forms.vague:
            order = np.array([j for j in order if not forms.is_vague(self.vocabulary_[j])], dtype=np.int64)
        order = order[: self.config.top_k]
        means = self.class_mean_pooled_[[c]]
        model = self.attribute_model_
        readable = model.readable(means, model.scores(means, self.filter_given_image_class(means, [c])))[0]
        top = [(self.vocabulary_[j], float(readable[j])) for j in order]
        name = self.readable_name(c)
        return ClassDescription(c, name, class_sentence(name, [t for t, _ in top], self._forms()), top, model.score_name)

    def write(self, class_index: int, attributes: list[str]) -> str:
        """The explanation sentence for ``attributes`` (best first), in this explainer's style."""
        return self._because(self.readable_name(class_index), attributes)

    def _forms(self) -> SurfaceForms | None:
        return self.surface_forms_ if self.config.sentence == "natural" else None

    def _unsaid(self, forms: SurfaceForms | None) -> np.ndarray | None:
        """Which vocabulary terms are vague ("particular bird"), computed once per vocabulary and forms."""
        if forms is None or not forms.vague:
            return None
        cached = getattr(self, "_unsaid_memo", None)  # (vocabulary, forms, mask): the objects it was made from
        if cached is None or cached[0] is not self.vocabulary_ or cached[1] is not forms \
                or len(cached[2]) != len(self.vocabulary_):
            mask = np.array([forms.is_vague(t) for t in self.vocabulary_], dtype=bool)
            cached = self._unsaid_memo = (self.vocabulary_, forms, mask)
        return cached[2]

    def _because(self, name: str, attributes: list[str]) -> str:
        forms = self._forms()
        return because_sentence(name, attributes) if forms is None else natural_sentence(name, attributes, forms)

    # ----- persistence -----------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write arrays (safetensors) and everything else (JSON) atomically; no pickled code.

        The JSON carries the format version and the SHA-256 of the arrays file, which
        :meth:`load` verifies.
        """
        self._check_fitted()
        folder = Path(folder)
        arrays = {"weights": self._weights, "bias": self._bias, "class_mean_pooled": self.class_mean_pooled_,
                  **self.cooccurrence_.arrays()}
        if self.attribute_model_ is not self.cooccurrence_:
            arrays.update(self.attribute_model_.arrays())
        if self.has_part_maps:
            arrays.update(self.part_maps_.arrays())
        with atomic_folder(folder, "explainer") as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, tmp / "explainer.safetensors")
            meta = {"format_version": FORMAT_VERSION, "config": asdict(self.config), "vocabulary": self.vocabulary_,
                    "class_names": self.class_names_, "n_images": self.n_images_, "metadata": self.metadata_,
                    "surface_forms": self.surface_forms_.to_dict(), "synonyms": self.synonyms_.to_dict(),
                    "arrays_sha256": _sha256(tmp / "explainer.safetensors")}
            if self.has_part_maps:  # only then: explainers without part maps keep their JSON as before
                meta["part_maps"] = {"parts": self.part_maps_.parts_, "attribute_parts": self.attribute_parts_,
                                     "settings": self.part_maps_settings_}
                if self.pools_parts:  # only then: other explainers keep their JSON as before
                    meta["part_maps"]["pooling_groups"] = [list(g) for g in self.pooling_groups_]
            meta["content_sha256"] = _content_sha256(meta)  # an edited vocabulary or class list is caught too
            (tmp / "explainer.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Explainer:
        """Read a folder written by :meth:`save`, verifying its version, digest, keys and shapes."""
        folder = Path(folder)
        meta_path, arrays_path = folder / "explainer.json", folder / "explainer.safetensors"
        if not meta_path.is_file() or not arrays_path.is_file():
            raise SaywhyError(f"{folder} is not a fitted explainer (needs explainer.json and explainer.safetensors): run 'saywhy fit'")
        refit = f"refit it with 'saywhy fit --out {folder}'"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SaywhyError(f"{meta_path} is damaged ({error.__class__.__name__}): {refit}") from None
        if not isinstance(meta, dict) or meta.get("format_version") not in READABLE_VERSIONS:
            raise SaywhyError(f"{folder} was written by another saywhy version: {refit}")
        # Format 5 always carries the content digest; only format 4 files, written before it, may lack it.
        if ("content_sha256" in meta or meta["format_version"] >= 5) and meta.get("content_sha256") != _content_sha256(meta):
            raise SaywhyError(f"{meta_path} was edited after saving (its content digest differs): {refit}")
        if meta.get("arrays_sha256") != _sha256(arrays_path):
            raise SaywhyError(f"{arrays_path} does not match the digest in {meta_path.name} (damaged or edited): {refit}")
        try:
            arrays = load_file(arrays_path)
            # an explainer saved before a setting existed keeps what it did then (retrieval by eq. 5,
            # evidence pooled globally, no visibility gate), whatever today's defaults are
            explainer = cls(ExplainerConfig.from_dict({**LEGACY_SETTINGS, **meta["config"]}))
            explainer._restore(meta, arrays)
        except SaywhyError as error:
            raise SaywhyError(f"{folder}: {error}") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise SaywhyError(f"{folder} is incomplete or inconsistent ({error.__class__.__name__}: {error}): {refit}") from None
        return explainer

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self._weights, self._bias = arrays["weights"], arrays["bias"]
        self.vocabulary_, self.class_names_ = list(meta["vocabulary"]), list(meta["class_names"])
        self.n_images_ = int(meta["n_images"])
        self.metadata_ = dict(meta.get("metadata", {}))
        self.surface_forms_ = SurfaceForms.from_dict(meta.get("surface_forms"))
        self.synonyms_ = SynonymGroups.from_dict(meta.get("synonyms"))
        self.class_mean_pooled_ = arrays["class_mean_pooled"]
        self.cooccurrence_ = CooccurrenceModel(self.config).load_arrays(arrays, self.n_images_)
        self.attribute_model_ = (self.cooccurrence_ if self.config.attribute_model == CooccurrenceModel.name
                                 else attribute_model(self.config.attribute_model, self.config).load_arrays(arrays, self.n_images_))
        self.part_maps_ = None
        if meta.get("part_maps"):
            info = meta["part_maps"]
            self.part_maps_ = PartMaps().load_arrays(arrays, list(info["parts"]))
            self.attribute_parts_ = {str(t): list(p) for t, p in info["attribute_parts"].items()}
            self.part_maps_settings_ = dict(info.get("settings", {}))
            if info.get("pooling_groups") is not None:
                self.pooling_groups_ = [tuple(str(p) for p in g) for g in info["pooling_groups"]]
                if "evidence_sources" not in arrays:
                    raise SaywhyError("the explainer's part pooling has no evidence sources: refit it")
            if self.part_maps_.location_weights_.shape[1] != self._weights.shape[1]:
                raise SaywhyError("the part maps' filters differ from the head's: refit it")
        n_classes, n_filters = self._weights.shape
        n_terms = len(self.vocabulary_)
        expected = {"bias": (n_classes,), "class_mean_pooled": (n_classes, self.feature_width_),
                    "filter_attribute_pdf": (n_filters, n_terms), "prior": (n_terms,), "filter_max": (n_filters,),
                    "filter_threshold": (n_filters,), "likelihood_sum": (n_terms, n_filters),
                    "attribute_images": (n_terms,), "evidence_weights": (n_terms, n_filters), "evidence_bias": (n_terms,),
                    "evidence_sources": (n_terms,), "evidence_global_weights": (n_terms, n_filters)}
        for key, shape in expected.items():
            if key in arrays and tuple(arrays[key].shape) != shape:
                raise SaywhyError(f"array {key!r} has shape {tuple(arrays[key].shape)}, expected {shape}: refit it")
        if len(self.class_names_) != n_classes:
            raise SaywhyError(f"{len(self.class_names_)} class names for a head of {n_classes} classes: refit it")
        for key, value in arrays.items():
            if key != "filter_threshold" and not np.isfinite(value).all():
                raise SaywhyError(f"array {key!r} holds NaN or infinite numbers: refit it")


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise SaywhyError(f"{what} contain NaN or infinite numbers: check the network's weights and the inputs")
    return array


def _content_sha256(meta: dict[str, Any]) -> str:
    """SHA-256 of the JSON's content (every field but this digest, keys sorted)."""
    content = {k: v for k, v in meta.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_only(array: np.ndarray) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


def _normalize(name: str) -> str:
    return "".join(ch for ch in readable_class_name(name).lower() if ch.isalnum())
