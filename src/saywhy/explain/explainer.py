"""The fitted explainer: the paper's p.d.f.s learned once, then sentences for any image.

Scikit-learn style: ``__init__`` stores settings, ``fit`` learns ``filter_attribute_pdf_``
and friends from pooled activations and attribute counts and returns ``self``. It works
on arrays only (pooled activations, head weights), so it never touches the network:
:mod:`saywhy.pipeline` runs the model and hands the arrays over.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from saywhy.core.attribute_evidence import AttributeEvidence, fit_attribute_evidence
from saywhy.core.filter_attribute import (
    FilterAttributeStatistics,
    attribute_incidence,
    filter_attribute_pdf,
    filter_given_image,
    top_fraction_thresholds,
)
from saywhy.core.image_class import class_attribute_pdf, filter_given_image_class, image_class_attribute_pdf
from saywhy.core.prior import attribute_prior
from saywhy.errors import SaywhyError
from saywhy.explain.names import readable_class_name
from saywhy.explain.sentence import (
    because_sentence,
    class_sentence,
    contrast_sentence,
    natural_sentence,
    split_attribute,
)
from saywhy.files import atomic_folder
from saywhy.text.surface import SurfaceForms

FORMAT_VERSION = 3
ATTRIBUTE_MODELS = ("evidence", "cooccurrence")
GROUNDINGS = ("signed", "positive", "part")
SENTENCES = ("natural", "paper")


@dataclass(frozen=True)
class ExplainerConfig:
    """Every choice the paper leaves open, by name.

    - ``top_k``: attributes in a sentence (the paper uses 5).
    - ``sigma_activation``: sigma of eq. 3: "l1", "softmax", "minmax", "identity" over
      the filters of an image (see :mod:`saywhy.core.normalization`), or "top": 1 for
      the ``top_fraction`` most activating fitting images of each filter, else 0.
    - ``top_fraction``: the share of images each filter counts as its own with "top".
    - ``filter_scale``: "none" or "max" (divide each filter by its largest activation
      before eq. 3).
    - ``sigma_decision``: sigma of eq. 6 and 8, over filters.
    - ``prior``: the attribute prior of eq. 1 ("tfidf", "tfidf_sum", "uniform").
    - ``likelihood``: eq. 2-4 as written ("sum") or with p(x|t) normalized ("mean").
    - ``contrast``: "difference" compares p(t|x,X) with p(t|x,Y) (the paper); "margin"
      weighs filters by their share of the logit margin, phi_k (w_X,k - w_Y,k), which is
      exactly what separates the two scores.
    - ``min_df``: attributes must occur in at least this many images' caption files.
    - ``attribute_model``: how filters tie to attributes in eq. 5-9. "cooccurrence" is the
      paper's p(t|f) of eq. 1-4; "evidence" fits one logistic model per attribute on the
      pooled activations and weighs each filter's log-odds evidence by p(f|x,c) (see
      :mod:`saywhy.core.attribute_evidence`). p(t|f) is fitted either way (Figure 5 uses it).
    - ``evidence_l2``: the evidence model's L2 penalty on standardized activations.
    - ``class_weighting``: with the evidence model, read each filter's evidence through
      p(f|x,c) of eq. 6 (True), or use p(t|x), the image alone, for every class (False).
    - ``grounding``: eq. 9 weights with the evidence model: "signed" (alpha = a_t, the
      heatmap is the attribute's logit laid out in space), "positive" (only evidence for
      t), or "part" (the mean of a_t' over every attribute t' naming the same part, weighted
      by how many images carry each: where the part is, whatever its colour). "part" is
      the best on cub50 but collapses where a part's attributes are mutually exclusive
      colours, whose signed weights cancel (synthbirds, BENCHMARKS.md).
    - ``sentence``: "paper" (the paper's template, lemmas as parsed) or "natural" (the
      same template written as the captions write: articles, plurals, an apposition for
      the object's own phrases, see :mod:`saywhy.text.surface`).

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
    evidence_l2: float = 1e-3
    class_weighting: bool = True
    grounding: str = "signed"
    sentence: str = "natural"

    def __post_init__(self) -> None:
        for name, allowed in (("attribute_model", ATTRIBUTE_MODELS), ("grounding", GROUNDINGS), ("sentence", SENTENCES)):
            if getattr(self, name) not in allowed:
                raise SaywhyError(f"unknown {name.replace('_', ' ')} {getattr(self, name)!r}: choose one of {', '.join(allowed)}")

    @classmethod
    def paper(cls, **changes: Any) -> ExplainerConfig:
        """The paper's method: p(t|f) of eq. 1-4 with sigma = l1 in eq. 3, 6 and 8, p(t|x,X) against
        p(t|x,Y) for contrasts, and the paper's sentence template."""
        return cls(**{"sigma_activation": "l1", "contrast": "difference", "attribute_model": "cooccurrence",
                      "sentence": "paper", **changes})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplainerConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Explanation:
    """Why the network put one image in one class."""

    class_index: int
    class_name: str
    sentence: str
    attributes: list[tuple[str, float]]  # top attributes with p(t|x,c), best first
    score: float | None = None  # the class's logit, when known
    # With the evidence model, each attribute's class-weighted evidence b_t + F sum_k a_tk phi_k
    # p(f_k|x,c), what the ranking uses. Its sigmoid is the p(t|x,c) above, a ranking score and
    # not a calibrated probability: the weighting multiplies the evidence of the filters that
    # carry the decision (on cub50 the top attribute's is about +30), so p rounds to 1 and these
    # are the numbers to compare. None with the paper's p(t|f).
    evidence: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Contrast:
    """Why class X and not class Y (the paper's Figure 1)."""

    sentence: str
    favour: list[tuple[str, float]]  # attributes with p(t|x,X) - p(t|x,Y) > 0, largest first
    against: list[tuple[str, float]]  # attributes with p(t|x,Y) - p(t|x,X) > 0, largest first
    explanation: Explanation
    other: Explanation

    def to_dict(self) -> dict[str, Any]:
        return {"sentence": self.sentence, "favour": self.favour, "against": self.against,
                "explanation": self.explanation.to_dict(), "other": self.other.to_dict()}


@dataclass
class ClassDescription:
    class_index: int
    class_name: str
    sentence: str
    attributes: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Explainer:
    """Learns p(t|f) (eq. 1-4) and explains decisions with eq. 5-8.

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
            surface_forms: SurfaceForms | None = None) -> Explainer:
        """Learn p(t|f) (and the evidence model) from the fitting images' pooled activations and attribute counts.

        ``pooled`` (images x filters) and ``term_counts`` (images x attributes, TF per
        caption file) must describe the same images in the same order; ``weights`` is the
        linear head's (classes x filters) matrix; ``surface_forms`` say how the captions
        write each noun (for ``sentence="natural"``).
        """
        pooled = np.asarray(pooled, dtype=np.float64)
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape[1] != pooled.shape[1]:
            raise SaywhyError(f"head has {weights.shape[1]} inputs but activations have {pooled.shape[1]} filters")
        if len(class_names) != weights.shape[0]:
            raise SaywhyError(
                f"model predicts {weights.shape[0]} classes but the dataset has {len(class_names)}: "
                "use the checkpoint trained on this dataset, or a dataset with the model's classes"
            )
        if len(vocabulary) == 0 or term_counts.shape[1] != len(vocabulary):
            raise SaywhyError("empty attribute vocabulary: lower --min-df or give images with captions")
        cfg = self.config
        self.filter_max_ = pooled.max(axis=0) if len(pooled) else np.zeros(pooled.shape[1])
        self.filter_threshold_ = (top_fraction_thresholds(pooled, cfg.top_fraction) if len(pooled)
                                  else np.zeros(pooled.shape[1]))
        p_f_given_x = filter_given_image(pooled, cfg.sigma_activation, cfg.filter_scale, self.filter_max_,
                                         self.filter_threshold_)
        self.statistics_ = FilterAttributeStatistics.from_chunk(p_f_given_x, attribute_incidence(term_counts))
        self.prior_ = np.asarray(attribute_prior(term_counts, kind=cfg.prior), dtype=np.float64)
        self.filter_attribute_pdf_ = filter_attribute_pdf(self.statistics_, self.prior_, cfg.likelihood)
        self.vocabulary_ = list(vocabulary)
        self.weights_ = weights
        self.bias_ = np.zeros(weights.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
        self.class_names_ = list(class_names)
        self.metadata_ = dict(metadata or {})
        self.surface_forms_ = surface_forms or SurfaceForms()
        self.evidence_ = None
        if cfg.attribute_model == "evidence":
            self.evidence_ = fit_attribute_evidence(pooled, attribute_incidence(term_counts), cfg.evidence_l2)
        # eq. 7-8 with the evidence model needs activations for a class: the mean of the fitting
        # images the network puts in that class (the overall mean where it puts none).
        predicted = (pooled @ weights.T + self.bias_).argmax(axis=1) if len(pooled) else np.zeros(0, int)
        overall = pooled.mean(axis=0) if len(pooled) else np.zeros(pooled.shape[1])
        self.class_mean_pooled_ = np.stack([pooled[predicted == c].mean(axis=0) if (predicted == c).any() else overall
                                            for c in range(weights.shape[0])])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "filter_attribute_pdf_"):
            raise SaywhyError("this explainer is not fitted: call fit() or load a fitted one ('saywhy fit')")

    # ----- eq. 5-8 ---------------------------------------------------------------------
    def class_index(self, name_or_index: str | int) -> int:
        """A class by index, raw name ("001.Black_footed_Albatross") or readable name."""
        self._check_fitted()
        if isinstance(name_or_index, (int, np.integer)):
            if not 0 <= name_or_index < len(self.class_names_):
                raise SaywhyError(f"class index {name_or_index} is out of range 0..{len(self.class_names_) - 1}")
            return int(name_or_index)
        wanted = _normalize(name_or_index)
        for i, raw in enumerate(self.class_names_):
            if wanted in (_normalize(raw), _normalize(readable_class_name(raw))):
                return i
        close = [readable_class_name(n) for n in self.class_names_ if wanted[:4] in _normalize(n)][:5]
        raise SaywhyError(f"unknown class {name_or_index!r}; similar: {', '.join(close) or 'none'} ('saywhy describe --list' lists all)")

    def readable_name(self, index: int) -> str:
        return readable_class_name(self.class_names_[index])

    def decision_function(self, pooled: np.ndarray) -> np.ndarray:
        """The head's logits W phi + b (images x classes), recomputed exactly from pooled activations."""
        self._check_fitted()
        return np.atleast_2d(np.asarray(pooled, np.float64)) @ self.weights_.T + self.bias_

    logits = decision_function

    def predict(self, pooled: np.ndarray) -> np.ndarray:
        """The head's decision, recomputed from pooled activations: argmax(W phi + b)."""
        return self.decision_function(pooled).argmax(axis=1)

    def predict_proba(self, pooled: np.ndarray) -> np.ndarray:
        """Softmax of the logits: the network's class probabilities (images x classes)."""
        z = self.decision_function(pooled)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    @property
    def head_weights_(self) -> np.ndarray:
        """The linear head's W (classes x filters), read-only."""
        self._check_fitted()
        return _read_only(self.weights_)

    @property
    def head_bias_(self) -> np.ndarray:
        self._check_fitted()
        return _read_only(self.bias_)

    def unnormalized_filter_pdf(self, filter_index: int) -> np.ndarray:
        """Eq. 1 before normalizing, p(t) sum_x p(f|x) p(x|t), for one filter (the bars of Figure 5)."""
        self._check_fitted()
        return self.prior_ * self.statistics_.likelihood_sum[:, filter_index]

    def attribute_pdf(self, pooled: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
        """Eq. 5-6: p(t|x_i, c_i) for each image (images x attributes); classes default to predictions."""
        return self._scores(pooled, classes)[0]

    def attribute_log_pdf(self, pooled: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
        """log p(t|x_i, c_i), what rankings use: the evidence model's probabilities round to exactly 1
        for strong evidence, its log-probabilities keep the order (log sigmoid(z) = -log(1 + e^-z))."""
        return self._scores(pooled, classes)[1]

    def _scores(self, pooled: np.ndarray, classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(p(t|x,c), log p(t|x,c), the evidence model's logits or None), each computed once.

        With p(t|f), p is eq. 5 exactly (not exp(log p)); with the evidence model, log p comes
        straight from the logits, so it keeps their order where p rounds to 1.
        """
        self._check_fitted()
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        classes = self.predict(pooled) if classes is None else np.broadcast_to(np.asarray(classes), (len(pooled),))
        if self.evidence_ is None:
            pdf = image_class_attribute_pdf(self.filter_attribute_pdf_, pooled, self.weights_[classes],
                                            self.config.sigma_decision)
            with np.errstate(divide="ignore"):
                return pdf, np.log(pdf), None
        logits = self._evidence_logits(pooled, classes)
        log_pdf = -np.logaddexp(0.0, -logits)
        return np.exp(log_pdf), log_pdf, logits

    def _evidence_logits(self, pooled: np.ndarray, classes: np.ndarray) -> np.ndarray:
        if not self.config.class_weighting:
            return self.evidence_.logits(pooled)
        return self.evidence_.logits(pooled, filter_given_image_class(pooled, self.weights_[classes],
                                                                      self.config.sigma_decision))

    def class_pdf(self) -> np.ndarray:
        """Eq. 7-8: p(t|c) for every class (classes x attributes)."""
        self._check_fitted()
        if self.evidence_ is None:
            return class_attribute_pdf(self.filter_attribute_pdf_, self.weights_, self.config.sigma_decision)
        means = self.class_mean_pooled_
        if not self.config.class_weighting:
            return self.evidence_.probability(means)
        return self.evidence_.probability(means, filter_given_image_class(means, self.weights_, self.config.sigma_decision))

    def grounding_alphas(self) -> np.ndarray:
        """Eq. 9's alpha for every attribute (filters x attributes): p(t|f), or the evidence model's weights."""
        self._check_fitted()
        if self.evidence_ is None:
            return self.filter_attribute_pdf_
        weights = self.evidence_.weights.T
        if self.config.grounding == "positive":
            return np.maximum(weights, 0.0)
        if self.config.grounding == "signed":
            return weights
        return part_weights(weights, self.vocabulary_, self.statistics_.attribute_images)

    def filter_shares(self, pooled: np.ndarray, classes: np.ndarray, attributes: np.ndarray) -> np.ndarray:
        """(images x filters): how much each filter carries the given attributes (one row of indices per
        image) in eq. 5: p(f_k|x,c) sum_t p(t|f_k), or p(f_k|x,c) times the filter's positive evidence."""
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        p_filter = filter_given_image_class(pooled, self.weights_[classes], self.config.sigma_decision)
        if self.evidence_ is None:
            return p_filter * self.filter_attribute_pdf_.T[np.asarray(attributes)].sum(axis=1)
        return p_filter * self.evidence_.filter_evidence(pooled, attributes)

    def _top(self, scores: np.ndarray, k: int, positive_only: bool = False) -> list[tuple[str, float]]:
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.vocabulary_[j], float(scores[j])) for j in order if not positive_only or scores[j] > 0]

    # ----- sentences -------------------------------------------------------------------
    def explain(self, pooled: np.ndarray, classes: np.ndarray | None = None) -> list[Explanation]:
        """One explanation per image: "This is a X because it has ...", for the given or predicted class."""
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))
        classes = self.predict(pooled) if classes is None else np.broadcast_to(np.asarray(classes), (len(pooled),))
        pdf, log_pdf, evidence = self._scores(pooled, classes)  # rank by log p: it keeps order where p rounds to 1
        logits = pooled @ self.weights_.T + self.bias_
        out = []
        for i, c in enumerate(classes):
            order = np.argsort(-log_pdf[i], kind="stable")[: self.config.top_k]
            top = [(self.vocabulary_[j], float(pdf[i, j])) for j in order]
            name = self.readable_name(int(c))
            out.append(Explanation(int(c), name, self._because(name, [t for t, _ in top]), top, float(logits[i, c]),
                                   None if evidence is None else [float(evidence[i, j]) for j in order]))
        return out

    def contrast_scores(self, pooled: np.ndarray, a: int, b: int) -> np.ndarray:
        """Per attribute, evidence for class ``a`` over ``b`` in one image (negative: for ``b``).

        "difference": p(t|x,a) - p(t|x,b), eq. 5 for both classes. "margin": eq. 5 with
        eq. 6 re-weighted by the logit margin phi_k (w_a,k - w_b,k), for a minus for b.
        With the evidence model both compare log-odds instead of probabilities, which
        round to 1 for strong evidence on both sides.
        """
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))[:1]
        if self.config.contrast == "difference":
            if self.evidence_ is not None:
                return (self._evidence_logits(pooled, np.array([a])) - self._evidence_logits(pooled, np.array([b])))[0]
            return (self.attribute_pdf(pooled, np.array([a])) - self.attribute_pdf(pooled, np.array([b])))[0]
        if self.config.contrast != "margin":
            raise SaywhyError(f"unknown contrast {self.config.contrast!r}: choose margin or difference")
        margin = (self.weights_[a] - self.weights_[b])[None, :]
        for_a = filter_given_image_class(pooled, margin, self.config.sigma_decision)
        for_b = filter_given_image_class(pooled, -margin, self.config.sigma_decision)
        if self.evidence_ is None:
            return ((for_a - for_b) @ self.filter_attribute_pdf_)[0]
        return (self.evidence_.logits(pooled, for_a) - self.evidence_.logits(pooled, for_b))[0]

    def contrast(self, pooled: np.ndarray, class_a: str | int, class_b: str | int, k: int = 3) -> Contrast:
        """Why class A and not class B for one image: the attributes with most evidence for each side."""
        a, b = self.class_index(class_a), self.class_index(class_b)
        pooled = np.atleast_2d(np.asarray(pooled, np.float64))[:1]
        scores = self.contrast_scores(pooled, a, b)
        favour, against = self._top(scores, k, True), self._top(-scores, k, True)
        sentence = contrast_sentence(self.readable_name(a), self.readable_name(b),
                                     [t for t, _ in favour], [t for t, _ in against], self._forms())
        return Contrast(sentence, favour, against, self.explain(pooled, np.array([a]))[0],
                        self.explain(pooled, np.array([b]))[0])

    def describe(self, class_: str | int) -> ClassDescription:
        """Class-level description (eq. 7-8): what the network looks for in a class."""
        c = self.class_index(class_)
        top = self._top(self.class_pdf()[c], self.config.top_k)
        name = self.readable_name(c)
        return ClassDescription(c, name, class_sentence(name, [t for t, _ in top], self._forms()), top)

    def write(self, class_index: int, attributes: list[str]) -> str:
        """The explanation sentence for ``attributes`` (best first), in this explainer's style."""
        return self._because(self.readable_name(class_index), attributes)

    def _forms(self) -> SurfaceForms | None:
        return self.surface_forms_ if self.config.sentence == "natural" else None

    def _because(self, name: str, attributes: list[str]) -> str:
        forms = self._forms()
        return because_sentence(name, attributes) if forms is None else natural_sentence(name, attributes, forms)

    # ----- persistence -----------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write arrays (safetensors) and everything else (JSON) atomically; no pickled code."""
        self._check_fitted()
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            arrays = {
                "filter_attribute_pdf": self.filter_attribute_pdf_, "prior": self.prior_, "weights": self.weights_,
                "bias": self.bias_, "filter_max": self.filter_max_, "filter_threshold": self.filter_threshold_,
                "likelihood_sum": self.statistics_.likelihood_sum, "attribute_images": self.statistics_.attribute_images,
                "class_mean_pooled": self.class_mean_pooled_,
            }
            if self.evidence_ is not None:
                arrays.update(evidence_weights=self.evidence_.weights, evidence_bias=self.evidence_.bias)
            save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, tmp / "explainer.safetensors")
            meta = {"format_version": FORMAT_VERSION, "config": asdict(self.config), "vocabulary": self.vocabulary_,
                    "class_names": self.class_names_, "n_images": self.statistics_.n_images, "metadata": self.metadata_,
                    "surface_forms": self.surface_forms_.to_dict()}
            (tmp / "explainer.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Explainer:
        """Read a folder written by :meth:`save`."""
        folder = Path(folder)
        meta_path, arrays_path = folder / "explainer.json", folder / "explainer.safetensors"
        if not meta_path.is_file() or not arrays_path.is_file():
            raise SaywhyError(f"{folder} is not a fitted explainer (needs explainer.json and explainer.safetensors): run 'saywhy fit'")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise SaywhyError(f"{folder} was written by another saywhy version: refit with 'saywhy fit'")
        arrays = load_file(arrays_path)
        explainer = cls(ExplainerConfig.from_dict(meta["config"]))
        explainer.filter_attribute_pdf_ = arrays["filter_attribute_pdf"]
        explainer.prior_ = arrays["prior"]
        explainer.weights_ = arrays["weights"]
        explainer.bias_ = arrays["bias"]
        explainer.filter_max_ = arrays["filter_max"]
        explainer.filter_threshold_ = arrays["filter_threshold"]
        explainer.statistics_ = FilterAttributeStatistics(arrays["likelihood_sum"], arrays["attribute_images"], meta["n_images"])
        explainer.vocabulary_ = meta["vocabulary"]
        explainer.class_names_ = meta["class_names"]
        explainer.metadata_ = meta.get("metadata", {})
        explainer.surface_forms_ = SurfaceForms.from_dict(meta.get("surface_forms"))
        explainer.class_mean_pooled_ = arrays["class_mean_pooled"]
        explainer.evidence_ = (AttributeEvidence(arrays["evidence_weights"], arrays["evidence_bias"])
                               if "evidence_weights" in arrays else None)
        return explainer


def part_weights(weights: np.ndarray, vocabulary: list[str], images: np.ndarray) -> np.ndarray:
    """(filters x attributes): each column replaced by the mean of the columns of every attribute
    with the same noun, weighted by the number of images carrying each ("white belly" and
    "yellow belly" both get the belly's weights).

    >>> part_weights(np.array([[1.0, 3.0, 5.0]]), ["white belly", "yellow belly", "red crown"], np.array([3, 1, 2])).tolist()
    [[1.5, 1.5, 5.0]]
    """
    out = np.empty_like(weights)
    columns: dict[str, list[int]] = {}
    for j, term in enumerate(vocabulary):
        columns.setdefault(split_attribute(term)[1], []).append(j)
    counts = np.asarray(images, np.float64)
    for js in columns.values():
        share = counts[js] / counts[js].sum() if counts[js].sum() > 0 else np.full(len(js), 1 / len(js))
        out[:, js] = (weights[:, js] @ share)[:, None]
    return out


def _read_only(array: np.ndarray) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


def _normalize(name: str) -> str:
    return "".join(ch for ch in readable_class_name(name).lower() if ch.isalnum())
