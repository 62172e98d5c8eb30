"""The attribute vocabulary and the sparse term-count matrix (documents x terms).

A *document* is one image's caption file, given as the list of phrases found in all its
captions (``PhraseExtractor.extract_documents``); the count of a term in a document is
its term frequency TF(t, d), the number of times the phrase occurs in that file.

With ``synonyms`` (:class:`~saywhy.text.synonyms.SynonymGroups`), each phrase is first
written in its group's form ("black bill" -> "black beak"), so synonyms become one term
whose counts are the sum of theirs: they share their evidence.

Terms are ordered by document frequency, highest first, ties broken alphabetically, so
the same documents always give the same columns and the most common attributes come
first.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from saywhy.errors import SaywhyError
from saywhy.text.synonyms import SynonymGroups


class AttributeVocabulary:
    """Learn the attribute terms of a corpus and count them per document.

    ``min_df`` is the minimum number of documents a term must appear in to be kept.

    >>> vocabulary = AttributeVocabulary(min_df=2).fit([["red crown", "red crown"], ["red crown", "long bill"]])
    >>> vocabulary.terms_, vocabulary.document_frequency_.tolist()
    (['red crown'], [2])
    >>> vocabulary.transform([["red crown", "red crown", "blue wing"]]).toarray().tolist()
    [[2]]
    >>> merged = AttributeVocabulary(synonyms=SynonymGroups([["beak", "bill"]])).fit([["black bill", "black beak"]])
    >>> merged.terms_, merged.transform([["black bill", "black beak"]]).toarray().tolist()
    (['black beak'], [[2]])
    """

    def __init__(self, min_df: int = 1, synonyms: SynonymGroups | None = None):
        self.min_df = min_df
        self.synonyms = synonyms

    def fit(self, documents: Sequence[Sequence[str]]) -> AttributeVocabulary:
        """Keep the terms found in at least ``min_df`` documents, most frequent first."""
        if not isinstance(self.min_df, (int, np.integer)) or self.min_df < 1:
            raise SaywhyError(f"min_df must be a whole number of documents, at least 1; got {self.min_df!r}")
        _check_documents(documents)
        documents = self._merged(documents)
        return self.fit_frequencies(Counter(term for document in documents for term in set(document)), len(documents))

    def fit_frequencies(self, document_frequency: Mapping[str, int], n_documents: int) -> AttributeVocabulary:
        """:meth:`fit` from the documents' term -> document-count table (those of several
        shards add up: ``Counter`` + ``Counter``), without the documents themselves."""
        if not isinstance(self.min_df, (int, np.integer)) or self.min_df < 1:
            raise SaywhyError(f"min_df must be a whole number of documents, at least 1; got {self.min_df!r}")
        documents = range(n_documents)  # only its length is named in the error below
        kept = sorted((term for term, count in document_frequency.items() if count >= self.min_df),
                      key=lambda term: (-document_frequency[term], term))
        if not kept:
            raise SaywhyError(
                f"no attribute appears in at least min_df={self.min_df} documents "
                f"({len(document_frequency)} distinct terms seen in {len(documents)} documents): lower min_df"
            )
        self.terms_ = kept
        self.document_frequency_ = np.array([document_frequency[term] for term in kept], dtype=np.int64)
        self.index_ = {term: column for column, term in enumerate(kept)}
        return self

    def transform(self, documents: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """Term counts, documents x ``terms_``; terms outside the vocabulary are dropped."""
        if not hasattr(self, "index_"):
            raise SaywhyError("AttributeVocabulary is not fitted: call fit(documents) first")
        _check_documents(documents)
        return _count(self._merged(documents), self.index_)

    def _merged(self, documents: Sequence[Sequence[str]]) -> Sequence[Sequence[str]]:
        if self.synonyms is None or not self.synonyms.groups:
            return documents
        return [self.synonyms.terms(document) for document in documents]

    def fit_transform(self, documents: Sequence[Sequence[str]]) -> sp.csr_matrix:
        return self.fit(documents).transform(documents)


def _check_documents(documents: Sequence[Sequence[str]]) -> None:
    # A str is a Sequence[str] too: its characters would silently become the terms.
    if isinstance(documents, str) or any(isinstance(document, str) for document in documents):
        raise SaywhyError("documents must be lists of phrases, one list per document, not strings")


def _count(documents: Sequence[Sequence[str]], index: dict[str, int]) -> sp.csr_matrix:
    _check_documents(documents)
    # Built row by row straight into CSR arrays: linear in the number of occurrences.
    indptr, indices, counts = [0], [], []
    for document in documents:
        row = Counter(index[term] for term in document if term in index)
        columns = sorted(row)
        indices.extend(columns)
        counts.extend(row[column] for column in columns)
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.array(counts, dtype=np.int64), np.array(indices, dtype=np.int64), np.array(indptr, dtype=np.int64)),
        shape=(len(documents), len(index)),
    )
