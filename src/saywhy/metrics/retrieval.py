"""Attribute retrieval measured against caption ground truth (the paper's Table 2), in numpy.

Everything here takes three (images x attributes) arrays and nothing else:

- ``relevant``: ground truth, True where the attribute is among the phrases parsed from
  that image's captions;
- ``retrieved``: the set decision, True where the image is returned for the attribute
  (in saywhy: the attribute is in the image's top-k explanation);
- ``scores``: the ranking score, higher first (in saywhy: p(t|x, predicted class)).

Set decision, per attribute a, over the N evaluated images, with TP = retrieved and
relevant, FP = retrieved and not relevant, FN = relevant and not retrieved, TN = neither:

- ``recall`` = TP / (TP + FN): share of the images whose captions name a that are returned;
- ``true_negative_rate`` = TN / (TN + FP): share of the others that are left out;
- ``precision`` = TP / (TP + FP): share of the returned images whose captions name a.
  This is what saywhy reports as the paper's "accuracy" (Table 2: 27.9%, below its recall
  of 30.9%, which rules out (TP + TN) / N: with rare attributes that is close to the true
  negative rate, 90% or more);
- ``accuracy`` = (TP + TN) / N, the textbook binary accuracy, reported too under its own name;
- ``jaccard`` = TP / (TP + FP + FN).

A rate whose denominator is 0 (no image returned, for precision) is NaN for that
attribute and left out of the macro average, which is the plain mean over the
attributes where it is defined; ``n_defined`` says over how many. Micro averages pool the
counts of all attributes first.

Ranking, per attribute: images sorted by descending score, ties kept in image order
(a stable sort), so results are exact and reproducible.

- ``precision_at_k``: relevant images among the first k, divided by k (k = 10);
- ``average_precision``: (1 / R) * sum over the ranks r of relevant images of
  precision@r, R = number of relevant images (non-interpolated AP); mAP is its mean.

The random baseline ranks by seeded uniform scores and returns, for each attribute, a
random set of the same size as the method's set (the first |set| images of the random
ranking), so both are compared at the same number of returned images.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saywhy.errors import SaywhyError

SET_METRICS = ("recall", "true_negative_rate", "precision", "accuracy", "jaccard")


def _as_bool(name: str, array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise SaywhyError(f"{name} must be a 2-D array (images x attributes), got shape {array.shape}")
    return array.astype(bool)


def _check_shapes(**arrays: np.ndarray) -> None:
    shapes = {name: np.shape(a) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise SaywhyError(f"arrays must have the same (images x attributes) shape, got {shapes}")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def confusion_counts(retrieved: np.ndarray, relevant: np.ndarray) -> dict[str, np.ndarray]:
    """Per attribute (column) TP, FP, FN, TN of the set decision.

    >>> counts = confusion_counts([[1, 0], [1, 1], [0, 0]], [[1, 0], [0, 1], [1, 0]])
    >>> {k: v.tolist() for k, v in counts.items()}
    {'tp': [1, 1], 'fp': [1, 0], 'fn': [1, 0], 'tn': [0, 2]}
    """
    retrieved, relevant = _as_bool("retrieved", retrieved), _as_bool("relevant", relevant)
    _check_shapes(retrieved=retrieved, relevant=relevant)
    return {
        "tp": (retrieved & relevant).sum(0), "fp": (retrieved & ~relevant).sum(0),
        "fn": (~retrieved & relevant).sum(0), "tn": (~retrieved & ~relevant).sum(0),
    }


def set_metrics(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Recall, true negative rate, precision, accuracy and Jaccard from TP/FP/FN/TN (per attribute or pooled).

    >>> m = set_metrics({"tp": np.array([1]), "fp": np.array([1]), "fn": np.array([3]), "tn": np.array([5])})
    >>> [round(float(m[k][0]), 3) for k in ("recall", "true_negative_rate", "precision", "accuracy", "jaccard")]
    [0.25, 0.833, 0.5, 0.6, 0.2]
    """
    tp, fp, fn, tn = (np.asarray(counts[k]) for k in ("tp", "fp", "fn", "tn"))
    return {
        "recall": _ratio(tp, tp + fn),
        "true_negative_rate": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "jaccard": _ratio(tp, tp + fp + fn),
    }


def ranking(scores: np.ndarray) -> np.ndarray:
    """Per attribute (column), image indices from the highest score down; ties keep image order.

    >>> ranking(np.array([[0.1, 0.5], [0.9, 0.5], [0.5, 0.7]])).tolist()
    [[1, 2], [2, 0], [0, 1]]
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise SaywhyError(f"scores must be a 2-D array (images x attributes), got shape {scores.shape}")
    return np.argsort(-scores, axis=0, kind="stable")


def precision_at_k(scores: np.ndarray, relevant: np.ndarray, k: int = 10) -> np.ndarray:
    """Per attribute, the share of relevant images among the k best-scored (k capped at the image count).

    >>> precision_at_k(np.array([[0.9], [0.8], [0.1]]), np.array([[1], [0], [1]]), k=2).tolist()
    [0.5]
    """
    relevant = _as_bool("relevant", relevant)
    _check_shapes(scores=np.asarray(scores), relevant=relevant)
    if k < 1:
        raise SaywhyError(f"k must be at least 1, got {k}")
    k = min(k, len(relevant))
    if k == 0:
        return np.full(relevant.shape[1], np.nan)
    top = ranking(scores)[:k]
    return np.take_along_axis(relevant, top, axis=0).sum(0) / k


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Per attribute, non-interpolated average precision of the ranking (NaN without relevant images).

    Relevant images at ranks 1 and 3 of 3: AP = (1/1 + 2/3) / 2 = 0.8333.

    >>> average_precision(np.array([[0.9], [0.8], [0.1]]), np.array([[1], [0], [1]])).round(4).tolist()
    [0.8333]
    """
    relevant = _as_bool("relevant", relevant)
    _check_shapes(scores=np.asarray(scores), relevant=relevant)
    hits = np.take_along_axis(relevant, ranking(scores), axis=0).astype(np.float64)  # rank x attribute
    ranks = np.arange(1, len(hits) + 1, dtype=np.float64)[:, None]
    precision_at_hit = np.cumsum(hits, axis=0) / ranks * hits
    return _ratio(precision_at_hit.sum(0), hits.sum(0))


def random_baseline(relevant: np.ndarray, set_sizes: Sequence[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random scores, and per attribute a random set of ``set_sizes[a]`` images.

    The set is the first ``set_sizes[a]`` images of the random ranking, so it is a
    uniformly drawn subset of that size. Returns ``(scores, retrieved)``.

    >>> scores, retrieved = random_baseline(np.zeros((5, 2), bool), [2, 0], seed=1)
    >>> retrieved.sum(0).tolist(), scores.shape
    ([2, 0], (5, 2))
    """
    relevant = _as_bool("relevant", relevant)
    sizes = np.asarray(set_sizes, dtype=np.int64)
    if sizes.shape != (relevant.shape[1],) or (sizes < 0).any() or (sizes > len(relevant)).any():
        raise SaywhyError(f"set_sizes must give one size in 0..{len(relevant)} per attribute ({relevant.shape[1]})")
    scores = np.random.default_rng(seed).random(relevant.shape)
    rank_of = np.empty_like(relevant, dtype=np.int64)
    np.put_along_axis(rank_of, ranking(scores), np.arange(len(relevant))[:, None].repeat(relevant.shape[1], 1), axis=0)
    return scores, rank_of < sizes[None, :]


@dataclass
class RetrievalScores:
    """One method's retrieval quality: per-attribute values and their macro and micro averages."""

    per_attribute: dict[str, list[float]]  # metric -> one value per attribute (NaN where undefined)
    macro: dict[str, float]  # mean over the attributes where defined
    n_defined: dict[str, int]  # attributes each macro average is taken over
    micro: dict[str, float]  # from counts pooled over all attributes
    counts: dict[str, list[int]]  # tp, fp, fn, tn per attribute

    def to_dict(self) -> dict[str, Any]:
        clean = {k: [None if np.isnan(v) else v for v in vs] for k, vs in self.per_attribute.items()}
        return {"macro": self.macro, "n_defined": self.n_defined, "micro": self.micro,
                "per_attribute": clean, "counts": self.counts}

    def table2(self) -> dict[str, float]:
        """The paper's Table 2 columns (macro averages); "accuracy" is read as precision (module docstring)."""
        return {"recall": self.macro["recall"], "true_negative": self.macro["true_negative_rate"],
                "accuracy (precision)": self.macro["precision"]}


def retrieval_scores(scores: np.ndarray, retrieved: np.ndarray, relevant: np.ndarray, k: int = 10) -> RetrievalScores:
    """Set metrics of ``retrieved`` and ranking metrics of ``scores`` against ``relevant``.

    >>> r = retrieval_scores(np.array([[0.9], [0.8], [0.1]]), np.array([[1], [1], [0]]), np.array([[1], [0], [1]]), k=2)
    >>> r.macro["recall"], r.macro["precision"], round(r.macro["average_precision"], 4)
    (0.5, 0.5, 0.8333)
    """
    retrieved, relevant = _as_bool("retrieved", retrieved), _as_bool("relevant", relevant)
    scores = np.asarray(scores, dtype=np.float64)
    _check_shapes(scores=scores, retrieved=retrieved, relevant=relevant)
    counts = confusion_counts(retrieved, relevant)
    per = set_metrics(counts)
    per[f"precision_at_{k}"] = precision_at_k(scores, relevant, k)
    per["average_precision"] = average_precision(scores, relevant)
    macro, n_defined = {}, {}
    for name, values in per.items():
        defined = ~np.isnan(values)
        n_defined[name] = int(defined.sum())
        macro[name] = float(values[defined].mean()) if defined.any() else float("nan")
    pooled = set_metrics({name: np.array([c.sum()]) for name, c in counts.items()})
    micro = {name: float(v[0]) for name, v in pooled.items()}
    return RetrievalScores({k_: v.tolist() for k_, v in per.items()}, macro, n_defined, micro,
                           {name: c.astype(int).tolist() for name, c in counts.items()})


@dataclass
class RetrievalReport:
    """The method beside the random baseline, on the same images and attributes."""

    attributes: list[str]
    n_images: int
    k: int
    seed: int
    method: RetrievalScores
    random: RetrievalScores
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"attributes": self.attributes, "n_images": self.n_images, "k": self.k, "seed": self.seed,
                "method": self.method.to_dict(), "random": self.random.to_dict(), "notes": self.notes}


def evaluate_retrieval(scores: np.ndarray, retrieved: np.ndarray, relevant: np.ndarray, attributes: Sequence[str],
                       k: int = 10, seed: int = 0) -> RetrievalReport:
    """The method's set decision and ranking, and a seeded random baseline with the same set sizes.

    >>> rel = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    >>> report = evaluate_retrieval(rel * 0.9, rel, rel, ["red crown", "long tail"], k=2)
    >>> report.method.macro["recall"], report.method.macro["average_precision"]
    (1.0, 1.0)
    >>> report.random.counts["tp"][0] + report.random.counts["fp"][0]  # same set size as the method's
    2
    """
    relevant = _as_bool("relevant", relevant)
    retrieved = _as_bool("retrieved", retrieved)
    if len(attributes) != relevant.shape[1]:
        raise SaywhyError(f"{len(attributes)} attribute names for {relevant.shape[1]} columns")
    method = retrieval_scores(scores, retrieved, relevant, k)
    random_scores, random_retrieved = random_baseline(relevant, retrieved.sum(0), seed)
    return RetrievalReport(list(attributes), len(relevant), k, seed, method,
                           retrieval_scores(random_scores, random_retrieved, relevant, k))


# ----- a set decision at a chosen true negative rate ------------------------------------------
def thresholds_at_tnr(scores: np.ndarray, relevant: np.ndarray, tnr: float) -> np.ndarray:
    """Per attribute, the smallest score threshold whose true negative rate on these images is at
    least ``tnr``, an image being retrieved when its score is strictly above the threshold.

    The threshold is the ceil(tnr x negatives)-th lowest score of the non-relevant images (ties
    can only raise the rate); an attribute without non-relevant images gets -inf (everything is
    retrieved, as nothing can be wrongly returned). Fit on one set of images (training), apply
    to another with :func:`retrieve_above`.

    >>> thresholds_at_tnr(np.array([[0.1], [0.2], [0.3], [0.4], [0.9]]), np.array([[0], [0], [0], [0], [1]]), 0.75).tolist()
    [0.3]
    """
    relevant = _as_bool("relevant", relevant)
    scores = np.asarray(scores, np.float64)
    _check_shapes(scores=scores, relevant=relevant)
    if not 0.0 < tnr <= 1.0:
        raise SaywhyError(f"the true negative rate must be in (0, 1], got {tnr}")
    out = np.full(scores.shape[1], -np.inf)
    for a in range(scores.shape[1]):
        negatives = np.sort(scores[~relevant[:, a], a])
        if len(negatives):
            out[a] = negatives[int(np.ceil(tnr * len(negatives) - 1e-9)) - 1]
    return out


def retrieve_above(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The set decision of a threshold per attribute: True where the score is strictly above it.

    >>> retrieve_above(np.array([[0.2, 0.5], [0.4, 0.1]]), np.array([0.3, 0.3])).tolist()
    [[False, True], [True, False]]
    """
    scores = np.asarray(scores, np.float64)
    return scores > np.asarray(thresholds, np.float64)[None, :]
