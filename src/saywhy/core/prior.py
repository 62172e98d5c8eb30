"""The attribute prior p(t) of eq. 1, from TF-IDF statistics of the caption files.

    TF(t, d) = occurrences of phrase t in caption file d
    IDF(t)   = log(N / D(t)),  N caption files, D(t) of them containing t

The paper only says p(t) is a "normalized TF/IDF feature". The named choices:

``"tfidf"`` (default)
    p(t) ∝ mean over the files containing t of TF(t, d) * IDF(t)
         = (sum_d TF(t, d) / D(t)) * IDF(t).
    How strongly a file that mentions t stresses it, times how specific t is. A rare,
    specific phrase ("orange beak") outweighs a phrase every file uses ("small bird"),
    which is the paper's point of using IDF; averaging over the files that contain t keeps
    the number of files out of the score, since the likelihood p(f|t) of eq. 2 already
    grows with it.
``"tfidf_sum"``
    p(t) ∝ sum_d TF(t, d) * IDF(t): the TF-IDF weight summed over the corpus, so frequent
    phrases gain from their frequency as much as they lose in IDF.
``"uniform"``
    p(t) = 1 / number of terms: no prior.

A term found in every file has IDF = 0, and so TF-IDF weight 0: it tells files apart no
better than nothing. Rather than a hard zero, every weight gets ``floor`` (1e-12) added
before normalizing, so p(t) stays a distribution with log p(t) finite, such terms rank
last, and a corpus where every term is in every file (e.g. a single file) gives a uniform
prior instead of 0/0. Pass ``floor=0`` for the exact paper formula.

The statistics (N, D(t), sum_d TF(t, d)) add up over disjoint sets of files, so they can
be accumulated chunk by chunk with ``PriorStatistics``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from saywhy.errors import SaywhyError

PRIOR_KINDS = ("tfidf", "tfidf_sum", "uniform")
PRIOR_FLOOR = 1e-12


@dataclass(frozen=True, eq=False)
class PriorStatistics:
    """The additive statistics behind p(t): N, D(t) and sum_d TF(t, d).

    >>> counts = sp.csr_matrix(np.array([[2, 1], [0, 1]]))
    >>> stats = PriorStatistics.from_counts(counts)
    >>> stats.n_documents, stats.document_frequency.tolist(), stats.term_frequency_sum.tolist()
    (2, [1, 2], [2.0, 2.0])
    """

    n_documents: int
    document_frequency: np.ndarray
    term_frequency_sum: np.ndarray

    def __post_init__(self) -> None:
        document_frequency = np.array(self.document_frequency, dtype=np.int64)
        term_frequency_sum = np.array(self.term_frequency_sum, dtype=np.float64)
        if document_frequency.ndim != 1 or document_frequency.shape != term_frequency_sum.shape:
            raise SaywhyError(f"document_frequency {document_frequency.shape} and term_frequency_sum "
                              f"{term_frequency_sum.shape} must be vectors of the same length")
        if self.n_documents < 0 or (document_frequency < 0).any() or (document_frequency > self.n_documents).any():
            raise SaywhyError(f"document frequencies must lie between 0 and n_documents={self.n_documents}")
        document_frequency.setflags(write=False)
        term_frequency_sum.setflags(write=False)
        object.__setattr__(self, "n_documents", int(self.n_documents))
        object.__setattr__(self, "document_frequency", document_frequency)
        object.__setattr__(self, "term_frequency_sum", term_frequency_sum)

    @classmethod
    def from_counts(cls, term_counts: sp.spmatrix | np.ndarray) -> PriorStatistics:
        """Statistics of a term-count matrix (documents x terms, values TF(t, d))."""
        counts = sp.csr_matrix(term_counts, dtype=np.float64)
        if counts.nnz and counts.data.min() < 0:
            raise SaywhyError("term counts must not be negative")
        document_frequency = np.asarray((counts > 0).sum(axis=0)).ravel()
        term_frequency_sum = np.asarray(counts.sum(axis=0)).ravel()
        return cls(counts.shape[0], document_frequency, term_frequency_sum)

    def inverse_document_frequency(self) -> np.ndarray:
        """IDF(t) = log(N / D(t)); +inf for a term in no document."""
        with np.errstate(divide="ignore"):
            return np.log(self.n_documents / self.document_frequency.astype(np.float64))

    def prior(self, kind: str = "tfidf", floor: float = PRIOR_FLOOR) -> np.ndarray:
        """p(t) of eq. 1, a vector over terms summing to 1 (see the module docstring)."""
        n_terms = self.document_frequency.size
        if n_terms == 0:
            raise SaywhyError("cannot build an attribute prior over an empty vocabulary")
        if kind == "uniform":
            return np.full(n_terms, 1.0 / n_terms)
        if kind not in PRIOR_KINDS:
            raise SaywhyError(f"unknown prior kind {kind!r}: choose one of {', '.join(PRIOR_KINDS)}")
        if floor < 0:
            raise SaywhyError(f"the prior floor must not be negative, got {floor}")
        present = self.document_frequency > 0
        idf = self.inverse_document_frequency()
        tf = self.term_frequency_sum
        if kind == "tfidf":
            tf = np.divide(tf, self.document_frequency, out=np.zeros(n_terms), where=present)
        # A term in no document has TF 0 and IDF inf: its weight is 0, not nan.
        weight = tf * np.where(present, idf, 0.0) + floor
        total = weight.sum()
        if total <= 0:
            raise SaywhyError(f"every term occurs in all {self.n_documents} documents, so every TF-IDF weight is 0: "
                              "use kind='uniform' or a positive floor")
        return weight / total


def inverse_document_frequency(term_counts: sp.spmatrix | np.ndarray) -> np.ndarray:
    """IDF(t) = log(N / D(t)) of a term-count matrix (documents x terms).

    >>> inverse_document_frequency(np.array([[1, 3], [0, 1]])).round(4).tolist()
    [0.6931, 0.0]
    """
    return PriorStatistics.from_counts(term_counts).inverse_document_frequency()


def attribute_prior(term_counts: sp.spmatrix | np.ndarray, kind: str = "tfidf",
                    floor: float = PRIOR_FLOOR) -> np.ndarray:
    """p(t) of eq. 1 from a term-count matrix (documents x terms, values TF(t, d)).

    >>> attribute_prior(np.array([[2, 1], [0, 1]]), floor=0).tolist()
    [1.0, 0.0]
    """
    return PriorStatistics.from_counts(term_counts).prior(kind, floor=floor)
