"""The attribute vocabulary and the documents x terms count matrix."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from saywhy.errors import SaywhyError
from saywhy.text.vocabulary import AttributeVocabulary

DOCUMENTS = [
    ["red crown", "long bill", "red crown"],
    ["long bill", "blue wing"],
    ["red crown", "blue wing", "black tail", "blue wing"],
    [],
]


def test_terms_sorted_by_document_frequency_then_alphabetically():
    vocabulary = AttributeVocabulary().fit(DOCUMENTS)
    assert vocabulary.terms_ == ["blue wing", "long bill", "red crown", "black tail"]
    assert vocabulary.document_frequency_.tolist() == [2, 2, 2, 1]


def test_counts_are_occurrences_per_document():
    vocabulary = AttributeVocabulary()
    counts = vocabulary.fit_transform(DOCUMENTS)
    assert vocabulary.terms_ == ["blue wing", "long bill", "red crown", "black tail"]
    assert sp.isspmatrix_csr(counts)
    assert counts.dtype == np.int64
    assert counts.has_sorted_indices
    assert counts.toarray().tolist() == [[0, 1, 2, 0], [1, 1, 0, 0], [2, 0, 1, 1], [0, 0, 0, 0]]


def test_min_df_drops_rare_terms():
    vocabulary = AttributeVocabulary(min_df=2)
    counts = vocabulary.fit_transform(DOCUMENTS)
    assert vocabulary.terms_ == ["blue wing", "long bill", "red crown"]
    assert counts.toarray().tolist() == [[0, 1, 2], [1, 1, 0], [2, 0, 1], [0, 0, 0]]


def test_transform_drops_unknown_terms():
    vocabulary = AttributeVocabulary(min_df=2).fit(DOCUMENTS)
    counts = vocabulary.transform([["black tail", "red crown", "green eye", "red crown"]])
    assert counts.shape == (1, 3)
    assert counts.toarray().tolist() == [[0, 0, 2]]


def test_empty_vocabulary_names_min_df_and_terms_seen():
    with pytest.raises(SaywhyError, match=r"min_df=4 .*4 distinct terms seen in 4 documents"):
        AttributeVocabulary(min_df=4).fit(DOCUMENTS)


def test_invalid_min_df_is_an_error():
    with pytest.raises(SaywhyError, match="min_df"):
        AttributeVocabulary(min_df=0).fit(DOCUMENTS)


def test_transform_before_fit_is_an_error():
    with pytest.raises(SaywhyError, match="not fitted"):
        AttributeVocabulary().transform(DOCUMENTS)


def test_strings_instead_of_phrase_lists_are_an_error():
    with pytest.raises(SaywhyError, match="lists of phrases"):
        AttributeVocabulary().fit(["red crown", "long bill"])
    with pytest.raises(SaywhyError, match="lists of phrases"):
        AttributeVocabulary().fit(DOCUMENTS).transform("red crown")


def test_fit_transform_equals_fit_then_transform():
    vocabulary = AttributeVocabulary(min_df=2)
    together = vocabulary.fit_transform(DOCUMENTS).toarray()
    assert (together == AttributeVocabulary(min_df=2).fit(DOCUMENTS).transform(DOCUMENTS).toarray()).all()
