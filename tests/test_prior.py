"""The TF-IDF attribute prior p(t) of eq. 1 and its additive statistics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from saywhy.core.prior import PriorStatistics, attribute_prior, inverse_document_frequency
from saywhy.errors import SaywhyError

# 3 caption files x 3 terms. D = [2, 3, 1], sum of TF = [3, 3, 3], N = 3.
COUNTS = sp.csr_matrix(np.array([[2, 1, 0], [0, 1, 0], [1, 1, 3]]))


def test_idf_is_log_n_over_document_frequency():
    assert inverse_document_frequency(COUNTS) == pytest.approx([math.log(3 / 2), 0.0, math.log(3)], abs=1e-15)


def test_idf_of_a_term_in_no_document_is_infinite():
    assert inverse_document_frequency(np.array([[1, 0], [1, 0]])).tolist() == [0.0, math.inf]


def test_tfidf_prior_uses_mean_tf_over_files_containing_the_term():
    a, c = 1.5 * math.log(1.5), 3.0 * math.log(3)  # mean TF x IDF; the middle term has IDF 0
    assert attribute_prior(COUNTS, floor=0) == pytest.approx([a / (a + c), 0.0, c / (a + c)], rel=1e-12)


def test_tfidf_sum_prior_uses_total_tf():
    a, c = 3.0 * math.log(1.5), 3.0 * math.log(3)
    assert attribute_prior(COUNTS, kind="tfidf_sum", floor=0) == pytest.approx([a / (a + c), 0.0, c / (a + c)],
                                                                              rel=1e-12)


def test_uniform_prior():
    assert attribute_prior(COUNTS, kind="uniform").tolist() == [1 / 3, 1 / 3, 1 / 3]


def test_default_floor_keeps_a_term_in_every_file_positive():
    prior = attribute_prior(COUNTS)
    assert prior.sum() == pytest.approx(1.0, abs=1e-15)
    assert 0 < prior[1] < 1e-11
    assert prior == pytest.approx(attribute_prior(COUNTS, floor=0), abs=1e-11)


def test_term_in_no_file_gets_zero_not_nan():
    counts = sp.hstack([COUNTS, sp.csr_matrix((3, 1))])
    prior = attribute_prior(counts, floor=0)
    assert prior[3] == 0.0
    assert np.isfinite(prior).all()


def test_every_term_in_every_file_is_uniform_with_floor_and_an_error_without():
    counts = np.array([[1, 2], [3, 1]])
    assert attribute_prior(counts).tolist() == [0.5, 0.5]
    with pytest.raises(SaywhyError, match="every TF-IDF weight is 0"):
        attribute_prior(counts, floor=0)


def test_unknown_kind_is_an_error():
    with pytest.raises(SaywhyError, match="unknown prior kind 'tf'"):
        attribute_prior(COUNTS, kind="tf")


def test_statistics_of_known_counts():
    stats = PriorStatistics.from_counts(COUNTS)
    assert stats.n_documents == 3
    assert stats.document_frequency.tolist() == [2, 3, 1]
    assert stats.term_frequency_sum.tolist() == [3.0, 3.0, 3.0]


def test_explicit_zeros_do_not_count_as_occurrences():
    counts = sp.csr_matrix((np.array([0, 2]), np.array([0, 1]), np.array([0, 2])), shape=(1, 2))
    assert PriorStatistics.from_counts(counts).document_frequency.tolist() == [0, 1]


def test_statistics_are_read_only():
    stats = PriorStatistics.from_counts(COUNTS)
    with pytest.raises(ValueError):
        stats.document_frequency[0] = 7
