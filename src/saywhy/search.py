"""Attribute search (the paper's Figure 6): rank images by how likely each shows the query attributes.

Ranking: an image's score for a query is the probability that it contains the query
attributes, from the image-class attribute p.d.f. p(t|x, c) of eq. 5-6 with c the
predicted class. Several attributes combine as a product, i.e. the sum of their
log-probabilities, treating the attributes as independent given (x, c): an image must
be likely for every attribute, and one near-zero probability sinks it (a sum would let
one strong attribute hide a missing one). Each hit also shows the readable score of every
query attribute (:meth:`Explainer.readable_scores`: the calibrated p(t|x) with the
evidence model), since the class-weighted p(t|x,c) rounds to 1.

Set decision, as the paper words it: an image is retrieved when every query attribute is
among the top-k attributes of its explanation. :meth:`ExplainerSession.search` is the
entry point; Table 2 (:mod:`saywhy.apps.retrieval`) measures both against captions.
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saywhy.data.inputs import item_name
from saywhy.data.records import ImageRecord
from saywhy.errors import SaywhyError


def query_indices(explainer: Any, query: Sequence[str]) -> list[int]:
    """Vocabulary columns of the query attributes; an unknown one raises with close matches.

    >>> import numpy as np, scipy.sparse as sp
    >>> from saywhy.explain.explainer import Explainer
    >>> ex = Explainer().fit(np.eye(2), sp.csr_matrix(np.eye(2)), ["red crown", "blue wing"], np.eye(2), ["A", "B"])
    >>> query_indices(ex, ["Blue  Wing"])
    [1]
    """
    if isinstance(query, str):
        query = [query]
    if not query:
        raise SaywhyError("give at least one attribute to search for, e.g. \"white eyebrow\"")
    vocabulary = list(explainer.vocabulary_)
    synonyms = getattr(explainer, "synonyms_", None)  # any object with a vocabulary_ may be searched
    columns = []
    for attribute in query:
        wanted = " ".join(str(attribute).lower().split())
        if synonyms is not None:
            wanted = synonyms.term(wanted)  # "black bill" -> "black beak"
        try:  # a scan per attribute: a few are asked for, and a dict of the vocabulary costs more to build
            columns.append(vocabulary.index(wanted))
        except ValueError:
            close = difflib.get_close_matches(wanted, vocabulary, n=5, cutoff=0.6)
            hint = f"closest: {', '.join(close)}" if close else "no close match"
            raise SaywhyError(f"attribute {attribute!r} is not in the explainer's vocabulary ({hint}); "
                              "attributes are 'adjective noun' phrases from the captions") from None
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
    path: str  # the input: a file path, or "tensor[i]" / "image[i]"
    score: float  # product over the query of p(t|x, predicted class): the ranking
    log_score: float  # its log, which still orders hits where the evidence model's p rounds to 1
    probabilities: dict[str, float]  # each query attribute's readable score (the explainer's score_name)
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


def ranked_by(explainer: Any) -> str:
    """What :func:`rank_images` sums over the query, as a page or the CLI names it."""
    return "log p(t|x,c)" if explainer.config.retrieval_score == "class" else "log p(t|x)"


def rank_images(explainer: Any, pooled: np.ndarray, query: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank images (rows of pooled activations) for a query: ``(order, log_scores, in_explanation)``.

    ``order`` lists row indices best first (ties in row order); ``log_scores`` is the sum
    of the log scores retrieval ranks by (``Explainer.retrieval_log_scores``: log p(t|x, predicted
    class) or log p(t|x)) over the query; ``in_explanation`` the set decision (every query
    attribute cited by the image's explanation, :meth:`Explainer.cited_mask`: its top-k less the
    attributes it leaves out, hidden parts and vague words).
    """
    columns = query_indices(explainer, query)
    pooled = np.atleast_2d(np.asarray(pooled, np.float64))
    ranked = explainer.attribute_log_pdf(pooled) if explainer.config.retrieval_score == "class" \
        else explainer.retrieval_log_scores(pooled)
    log_scores = ranked[:, columns].sum(axis=1)  # the log of the product of probabilities
    in_explanation = explainer.cited_mask(pooled)[:, columns].all(axis=1)  # what explain() cites, exactly
    order = np.argsort(-log_scores, kind="stable")
    return order, log_scores, in_explanation


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
    pdf = explainer.readable_scores(acts.pooled[shown])
    predicted = explainer.predict(acts.pooled)
    hits = []
    for rank, (row, probs) in enumerate(zip(shown, pdf), start=1):
        position = int(acts.index[row])
        hits.append(SearchHit(rank, item_name(items[position], position), float(np.exp(log_scores[row])), float(log_scores[row]),
                              {explainer.vocabulary_[c]: float(probs[c]) for c in columns},
                              bool(in_explanation[row]), explainer.readable_name(int(predicted[row]))))
    return SearchResult(query, hits, len(acts.index), int(in_explanation.sum()), acts.n_unreadable,
                        explainer.config.top_k)


