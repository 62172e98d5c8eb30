"""Attribute-based image retrieval (the paper's Figure 6 and Table 2).

Ranking: an image's score for a query is the probability that it contains the query
attributes, from the image-class attribute p.d.f. p(t|x, c) of eq. 5-6 with c the
predicted class, or (``ExplainerConfig.retrieval_score="image"``) the score the
explanations show, the evidence model's calibrated p(t|x). Several attributes combine as a product, i.e. the sum of their
log-probabilities, treating the attributes as independent given (x, c): an image must
be likely for every attribute, and one near-zero probability sinks it (a sum would let
one strong attribute hide a missing one).

Set decision, as the paper words it: "return all the images that contain the query in
the generated textual explanation sentence", i.e. an image is retrieved when every query
attribute is among the top-k attributes of its explanation (k = ``config.top_k``, with
the explainer's own ordering and tie-breaking).

:func:`evaluate_attribute_retrieval` measures both against caption ground truth for the
most frequent caption attributes (Table 2), beside a random baseline.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer
from saywhy.metrics.retrieval import (
    RetrievalReport,
    evaluate_retrieval,
    retrieval_scores,
    retrieve_above,
    thresholds_at_tnr,
)
from saywhy.search import top_k_mask

# ----- Table 2 -------------------------------------------------------------------------------
@dataclass
class RetrievalEvaluation:
    """Table 2 on a set of images: the metrics and what was skipped."""

    report: RetrievalReport
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "skipped": self.skipped}


def frequent_attributes(documents: Sequence[Sequence[str] | None], n: int = 50,
                        vocabulary: Sequence[str] | None = None) -> list[str]:
    """The ``n`` attributes found in most documents (images), ties alphabetical; None documents ignored.

    With ``vocabulary`` given, only its attributes count (the explainer cannot rank others).

    >>> frequent_attributes([["red crown", "red crown", "long tail"], ["long tail"], None], n=2)
    ['long tail', 'red crown']
    """
    allowed = None if vocabulary is None else set(vocabulary)
    frequency = Counter(t for d in documents if d is not None for t in set(d) if allowed is None or t in allowed)
    return [t for t, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def evaluate_attribute_retrieval(explainer: Explainer, pooled: np.ndarray, documents: Sequence[Sequence[str] | None],
                                 n_attributes: int = 50, k: int = 10, seed: int = 0) -> RetrievalEvaluation:
    """Table 2: retrieval for the most frequent caption attributes of these images, and a random baseline.

    ``pooled`` rows and ``documents`` (each image's caption phrases, None without captions)
    describe the same images. Images without captions are skipped and counted, never
    scored. Ground truth: the attribute is among the image's caption phrases. Per
    attribute the method ranks by ``Explainer.retrieval_log_scores`` and returns the images whose
    top-k explanation names it (see :mod:`saywhy.metrics.retrieval` for the metrics).
    """
    pooled = np.atleast_2d(np.asarray(pooled, np.float64))
    if len(documents) != len(pooled):
        raise SaywhyError(f"{len(documents)} caption documents for {len(pooled)} images")
    keep = np.array([d is not None for d in documents], dtype=bool)
    # log p(t|x,c): the same order as p, without ties where the evidence model's p rounds to 1
    empty = np.zeros((0, len(explainer.vocabulary_)))
    scores = explainer.retrieval_log_scores(pooled[keep]) if keep.any() else empty
    # the set decision is what the explanations cite (their order, less hidden parts and vague words)
    cited = explainer.cited_mask(pooled[keep]) if keep.any() else np.zeros(empty.shape, bool)
    evaluation = score_retrieval(scores, explainer.vocabulary_, documents, explainer.config.top_k, n_attributes, k, seed,
                                 decision_mask=cited)
    evaluation.report.notes["ranking"] = ("p(t|x, predicted class), eq. 5-6" if explainer.config.retrieval_score == "class"
                                          else "the score the explanations show (the evidence model's p(t|x))")
    return evaluation


def score_retrieval(scores: np.ndarray, vocabulary: Sequence[str], documents: Sequence[Sequence[str] | None],
                    top_k: int = 5, n_attributes: int = 50, k: int = 10, seed: int = 0,
                    decision_mask: np.ndarray | None = None) -> RetrievalEvaluation:
    """Table 2 for any ranking: ``scores`` (captioned images x ``vocabulary``), one row per
    non-None document; an image is retrieved for an attribute in its ``top_k`` scores, or where
    ``decision_mask`` (images x vocabulary) is True: the attributes the explanations cite.

    This is how baselines that never look at the image (a class's caption frequencies)
    are measured exactly like the method.
    """
    keep = [d for d in documents if d is not None]
    skipped = {"images without captions": len(documents) - len(keep)}
    if not keep:
        raise SaywhyError("no evaluated image has captions: retrieval needs caption ground truth")
    if len(scores) != len(keep):
        raise SaywhyError(f"{len(scores)} score rows for {len(keep)} captioned images")
    attributes = frequent_attributes(keep, n_attributes, vocabulary)
    overall = frequent_attributes(keep, n_attributes)
    skipped["frequent caption attributes outside the vocabulary"] = len(set(overall) - set(attributes))
    if not attributes:
        raise SaywhyError("no caption attribute of these images is in the explainer's vocabulary")
    index = {t: j for j, t in enumerate(vocabulary)}
    columns = [index[t] for t in attributes]
    relevant = np.array([[t in set(d) for t in attributes] for d in keep], dtype=bool)
    if decision_mask is not None:
        decision_mask = np.asarray(decision_mask, bool)
        if decision_mask.shape != scores.shape:
            raise SaywhyError(f"a set decision of shape {decision_mask.shape} for scores of shape {scores.shape}")
        retrieved = decision_mask[:, columns]
    else:
        retrieved = top_k_mask(scores, top_k)[:, columns]
    report = evaluate_retrieval(scores[:, columns], retrieved, relevant, attributes, k=k, seed=seed)
    decision = f"attribute in the top-{top_k} explanation" if decision_mask is None else \
        f"attribute cited by the image's explanation (its top {top_k} less hidden parts and vague words)"
    report.notes = {"ranking": "the given scores", "set decision": decision,
                    "ground truth": "attribute among the phrases parsed from the image's captions"}
    return RetrievalEvaluation(report, skipped)


# ----- the paper's operating point -------------------------------------------------------------
PAPER_TNR = 0.929  # Table 2's true negative rate


def retrieval_at_tnr(train_scores: np.ndarray, train_documents: Sequence[Sequence[str]], test_scores: np.ndarray,
                     test_documents: Sequence[Sequence[str] | None], vocabulary: Sequence[str],
                     n_attributes: int = 50, tnr: float = PAPER_TNR, k: int = 10, seed: int = 0) -> dict[str, Any]:
    """Table 2 at a chosen operating point: per attribute, the threshold whose true negative rate on
    the TRAINING images is ``tnr`` (:func:`~saywhy.metrics.retrieval.thresholds_at_tnr`), applied
    to the test images; recall, TNR and precision on the test images (macro, as Table 2).

    ``train_scores`` (training images x ``vocabulary``) and ``test_scores`` (captioned test
    images x ``vocabulary``) come from the same ranking; the attributes are Table 2's (the
    ``n_attributes`` most frequent in the test captions that ``vocabulary`` holds). A
    random ranking thresholded the same way is the floor (recall near 1 - ``tnr``).
    """
    keep = [d for d in test_documents if d is not None]
    if len(test_scores) != len(keep) or len(train_scores) != len(train_documents):
        raise SaywhyError(f"{len(train_scores)}/{len(test_scores)} score rows for {len(train_documents)} training "
                          f"and {len(keep)} captioned test images")
    attributes = frequent_attributes(keep, n_attributes, vocabulary)
    if not attributes:
        raise SaywhyError("no caption attribute of these images is in the vocabulary")
    index = {t: j for j, t in enumerate(vocabulary)}
    columns = [index[t] for t in attributes]
    relevant = lambda docs: np.array([[t in set(d) for t in attributes] for d in docs], dtype=bool)  # noqa: E731
    train_relevant, test_relevant = relevant(train_documents), relevant(keep)
    rows = {}
    rng = np.random.default_rng(seed)
    rankings = {"method": (np.asarray(train_scores)[:, columns], np.asarray(test_scores)[:, columns]),
                "random": (rng.random(train_relevant.shape), rng.random(test_relevant.shape))}
    for name, (train, test) in rankings.items():
        thresholds = thresholds_at_tnr(train, train_relevant, tnr)
        macro = retrieval_scores(test, retrieve_above(test, thresholds), test_relevant, k).macro
        rows[name] = {m: macro[m] for m in ("recall", "true_negative_rate", "precision", "average_precision")}
        if name == "method":  # a reference only: the threshold that gives the rate on the test images themselves
            reference = thresholds_at_tnr(test, test_relevant, tnr)
            rows["method, threshold set on the test images (reference)"] = {
                m: retrieval_scores(test, retrieve_above(test, reference), test_relevant, k).macro[m]
                for m in ("recall", "true_negative_rate", "precision")}
    return {"target_tnr": tnr, "threshold_images": "training", "attributes": len(attributes),
            "train_images": len(train_documents), "test_images": len(keep), **rows}
