"""Attribute-based image retrieval (the paper's Figure 6 and Table 2).

Ranking: an image's score for a query is the probability that it contains the query
attributes, from the image-class attribute p.d.f. p(t|x, c) of eq. 5-6 with c the
predicted class. Several attributes combine as a product, i.e. the sum of their
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

import difflib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saywhy.data.records import ImageRecord
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer
from saywhy.metrics.retrieval import RetrievalReport, evaluate_retrieval

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def query_indices(explainer: Explainer, query: Sequence[str]) -> list[int]:
    """Vocabulary columns of the query attributes; an unknown one raises with close matches.

    >>> import scipy.sparse as sp
    >>> ex = Explainer().fit(np.eye(2), sp.csr_matrix(np.eye(2)), ["red crown", "blue wing"], np.eye(2), ["A", "B"])
    >>> query_indices(ex, ["Blue  Wing"])
    [1]
    """
    if isinstance(query, str):
        query = [query]
    if not query:
        raise SaywhyError("give at least one attribute to search for, e.g. \"white eyebrow\"")
    index = {term: i for i, term in enumerate(explainer.vocabulary_)}
    columns = []
    for attribute in query:
        wanted = " ".join(attribute.lower().split())
        if wanted not in index:
            close = difflib.get_close_matches(wanted, explainer.vocabulary_, n=5, cutoff=0.6)
            hint = f"close matches: {', '.join(close)}" if close else "no close match"
            raise SaywhyError(f"attribute {attribute!r} is not in the explainer's vocabulary ({hint}); "
                              "attributes are 'adjective noun' phrases from the captions")
        columns.append(index[wanted])
    return columns


def top_k_mask(pdf: np.ndarray, k: int) -> np.ndarray:
    """True where an attribute is among an image's k most probable ones (stable ties, as in explanations).

    >>> top_k_mask(np.array([[0.1, 0.5, 0.5, 0.2]]), 2).tolist()
    [[False, True, True, False]]
    """
    pdf = np.atleast_2d(np.asarray(pdf, np.float64))
    top = np.argsort(-pdf, axis=1, kind="stable")[:, :k]
    mask = np.zeros(pdf.shape, dtype=bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask


@dataclass
class SearchHit:
    """One ranked image."""

    rank: int
    path: str
    score: float  # product over the query of p(t|x, predicted class)
    log_score: float  # its log, which still orders hits where the evidence model's p rounds to 1
    probabilities: dict[str, float]  # each query attribute's p(t|x, predicted class)
    in_explanation: bool  # every query attribute is in the image's top-k explanation
    predicted_class: str


@dataclass
class SearchResult:
    """A query's ranking over a set of images."""

    query: list[str]
    hits: list[SearchHit]  # best first, at most ``top``
    n_images: int  # images ranked
    n_in_explanation: int  # size of the paper's retrieved set
    n_unreadable: int = 0
    top_k: int = 5

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "hits"}, "hits": [asdict(h) for h in self.hits]}


def rank_images(explainer: Explainer, pooled: np.ndarray, query: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank images (rows of pooled activations) for a query: ``(order, log_scores, in_explanation)``.

    ``order`` lists row indices best first (ties in row order); ``log_scores`` is the sum
    of log p(t|x, predicted class) over the query; ``in_explanation`` the set decision.
    """
    columns = query_indices(explainer, query)
    pooled = np.atleast_2d(np.asarray(pooled, np.float64))
    log_pdf = explainer.attribute_log_pdf(pooled)
    log_scores = log_pdf[:, columns].sum(axis=1)  # the log of the product of probabilities
    in_explanation = top_k_mask(log_pdf, explainer.config.top_k)[:, columns].all(axis=1)
    order = np.argsort(-log_scores, kind="stable")
    return order, log_scores, in_explanation


def list_images(folder: str | Path) -> list[Path]:
    """Image files under a folder, recursively, sorted by path."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise SaywhyError(f"image folder {folder} does not exist: pass a folder of images with --images")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise SaywhyError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
    return found


def search_images(session: Any, items: Sequence[ImageRecord | str | Path], query: Sequence[str],
                  top: int | None = 20) -> SearchResult:
    """Run the network over ``items`` and rank them for the query (unreadable images skipped, counted).

    ``session`` is a :class:`saywhy.pipeline.ExplainerSession`.
    """
    explainer = session.explainer
    query = [query] if isinstance(query, str) else list(query)
    columns = query_indices(explainer, query)  # fail before running the network
    acts = session.activations(list(items), strict=False)
    if len(acts.index) == 0:
        raise SaywhyError("none of the images could be read")
    order, log_scores, in_explanation = rank_images(explainer, acts.pooled, query)
    shown = order[:top]
    pdf = explainer.attribute_pdf(acts.pooled[shown])
    predicted = explainer.predict(acts.pooled)
    hits = []
    for rank, (row, probs) in enumerate(zip(shown, pdf), start=1):
        item = items[int(acts.index[row])]
        path = item.path if isinstance(item, ImageRecord) else Path(item)
        hits.append(SearchHit(rank, str(path), float(np.exp(log_scores[row])), float(log_scores[row]),
                              {explainer.vocabulary_[c]: float(probs[c]) for c in columns},
                              bool(in_explanation[row]), explainer.readable_name(int(predicted[row]))))
    return SearchResult(query, hits, len(acts.index), int(in_explanation.sum()), acts.n_unreadable,
                        explainer.config.top_k)


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
    attribute the method ranks by p(t|x, predicted class) and returns the images whose
    top-k explanation names it (see :mod:`saywhy.metrics.retrieval` for the metrics).
    """
    pooled = np.atleast_2d(np.asarray(pooled, np.float64))
    if len(documents) != len(pooled):
        raise SaywhyError(f"{len(documents)} caption documents for {len(pooled)} images")
    keep = np.array([d is not None for d in documents], dtype=bool)
    # log p(t|x,c): the same order as p, without ties where the evidence model's p rounds to 1
    scores = explainer.attribute_log_pdf(pooled[keep]) if keep.any() else np.zeros((0, len(explainer.vocabulary_)))
    evaluation = score_retrieval(scores, explainer.vocabulary_, documents, explainer.config.top_k, n_attributes, k, seed)
    evaluation.report.notes["ranking"] = "p(t|x, predicted class), eq. 5-6"
    return evaluation


def score_retrieval(scores: np.ndarray, vocabulary: Sequence[str], documents: Sequence[Sequence[str] | None],
                    top_k: int = 5, n_attributes: int = 50, k: int = 10, seed: int = 0) -> RetrievalEvaluation:
    """Table 2 for any ranking: ``scores`` (captioned images x ``vocabulary``), one row per
    non-None document; an image is retrieved for an attribute in its ``top_k`` scores.

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
    retrieved = top_k_mask(scores, top_k)[:, columns]
    report = evaluate_retrieval(scores[:, columns], retrieved, relevant, attributes, k=k, seed=seed)
    report.notes = {"ranking": "the given scores", "set decision": f"attribute in the top-{top_k} explanation",
                    "ground truth": "attribute among the phrases parsed from the image's captions"}
    return RetrievalEvaluation(report, skipped)
