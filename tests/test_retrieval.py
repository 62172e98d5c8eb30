"""Attribute retrieval (Figure 6, Table 2) and Figure 9's phrase counts: exact values on hand-made arrays."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image

from saywhy.apps.phrase_stats import top_phrases
from saywhy.apps.retrieval import evaluate_attribute_retrieval, frequent_attributes
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig
from saywhy.search import query_indices, rank_images, top_k_mask
from saywhy.metrics.retrieval import (
    average_precision,
    confusion_counts,
    evaluate_retrieval,
    precision_at_k,
    random_baseline,
    ranking,
    retrieval_scores,
    set_metrics,
)
from saywhy.render.contact_sheet import contact_sheet

VOCABULARY = ["red crown", "blue wing", "long tail"]
# p(t|x, predicted class) of five images, given directly.
PDF = np.array([
    [0.6, 0.3, 0.1],
    [0.5, 0.1, 0.4],
    [0.2, 0.7, 0.1],
    [0.3, 0.2, 0.5],
    [0.1, 0.6, 0.3],
])


class PdfExplainer:
    """Stands in for a fitted Explainer: row i of ``pdf`` is image i's p(t|x, predicted class).

    The "pooled activations" are just image numbers, so every number below is hand-checkable.
    """

    def __init__(self, pdf: np.ndarray, top_k: int):
        self.pdf, self.vocabulary_, self.config = pdf, VOCABULARY, SimpleNamespace(top_k=top_k, retrieval_score="class")

    def attribute_pdf(self, pooled, classes=None):
        return self.pdf[np.asarray(pooled)[:, 0].astype(int)]

    def attribute_log_pdf(self, pooled, classes=None):
        with np.errstate(divide="ignore"):
            return np.log(self.attribute_pdf(pooled, classes))

    retrieval_log_scores = attribute_log_pdf  # retrieval_score "class": retrieval ranks by eq. 5

    def cited_mask(self, pooled, classes=None):  # an explanation cites its top k
        return top_k_mask(self.attribute_pdf(pooled, classes), self.config.top_k)


def rows(n: int) -> np.ndarray:
    return np.arange(n, dtype=float)[:, None]


# ----- metrics/retrieval.py ----------------------------------------------------------------
def test_set_metrics_from_hand_counted_confusion():
    retrieved = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    relevant = np.array([[1, 0], [0, 1], [1, 0], [1, 0]])
    counts = confusion_counts(retrieved, relevant)
    assert {k: v.tolist() for k, v in counts.items()} == {"tp": [1, 1], "fp": [1, 1], "fn": [2, 0], "tn": [0, 2]}
    m = set_metrics(counts)
    assert m["recall"].tolist() == pytest.approx([1 / 3, 1.0])
    assert m["true_negative_rate"].tolist() == pytest.approx([0.0, 2 / 3])
    assert m["precision"].tolist() == pytest.approx([0.5, 0.5])
    assert m["accuracy"].tolist() == pytest.approx([0.25, 0.75])
    assert m["jaccard"].tolist() == pytest.approx([0.25, 0.5])


def test_precision_of_an_empty_set_is_undefined_and_left_out_of_the_macro_average():
    scores = np.array([[0.9, 0.9], [0.1, 0.1]])
    report = retrieval_scores(scores, np.array([[1, 0], [0, 0]]), np.array([[1, 1], [0, 0]]), k=1)
    assert math.isnan(report.per_attribute["precision"][1])
    assert report.macro["precision"] == 1.0 and report.n_defined["precision"] == 1
    assert report.macro["recall"] == 0.5  # recall is defined for both
    assert report.micro["recall"] == 0.5 and report.micro["precision"] == 1.0


def test_ranking_breaks_ties_by_image_order():
    assert ranking(np.array([[0.5], [0.9], [0.5], [0.5]]))[:, 0].tolist() == [1, 0, 2, 3]


def test_precision_at_k_and_average_precision_by_hand():
    scores = np.array([[0.1], [0.4], [0.1], [0.5]])  # ranking 3, 1, 0, 2
    relevant = np.array([[1], [0], [1], [1]])  # hits at ranks 1, 3, 4
    assert precision_at_k(scores, relevant, k=2).tolist() == [0.5]
    assert precision_at_k(scores, relevant, k=10).tolist() == [0.75]  # k capped at the 4 images
    assert average_precision(scores, relevant)[0] == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3)


def test_average_precision_without_relevant_images_is_undefined():
    assert math.isnan(average_precision(np.array([[0.3], [0.2]]), np.array([[0], [0]]))[0])


def test_random_baseline_is_seeded_and_keeps_set_sizes():
    relevant = np.zeros((50, 3), bool)
    scores, retrieved = random_baseline(relevant, [0, 7, 50], seed=3)
    assert retrieved.sum(0).tolist() == [0, 7, 50]
    again, _ = random_baseline(relevant, [0, 7, 50], seed=3)
    other, _ = random_baseline(relevant, [0, 7, 50], seed=4)
    assert np.array_equal(scores, again) and not np.array_equal(scores, other)
    # the random set is the head of the random ranking
    assert set(ranking(scores)[:7, 1]) == set(np.flatnonzero(retrieved[:, 1]))


def test_a_perfect_method_beats_the_random_baseline():
    rng = np.random.default_rng(0)
    relevant = rng.random((200, 4)) < 0.2
    report = evaluate_retrieval(relevant.astype(float), relevant, relevant, ["a b", "c d", "e f", "g h"], k=10, seed=0)
    assert report.method.macro["recall"] == 1.0 and report.method.macro["average_precision"] == 1.0
    assert report.method.macro["precision_at_10"] == 1.0
    assert report.random.macro["average_precision"] < 0.5
    assert report.random.counts["tp"][0] + report.random.counts["fp"][0] == relevant[:, 0].sum()


def test_shape_mismatch_is_an_error():
    with pytest.raises(SaywhyError, match="same"):
        retrieval_scores(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((2, 2)))


# ----- apps/retrieval.py -------------------------------------------------------------------
def test_top_k_mask_matches_the_explanation_order():
    assert top_k_mask(PDF, 1)[:, 0].tolist() == [True, True, False, False, False]
    assert top_k_mask(np.array([[0.4, 0.4, 0.2]]), 1).tolist() == [[True, False, False]]  # ties: first column


def test_rank_images_by_product_and_set_by_explanation():
    order, log_scores, in_explanation = rank_images(PdfExplainer(PDF, top_k=2), rows(5), ["red crown", "long tail"])
    assert order.tolist() == [1, 3, 0, 4, 2]  # products 0.06, 0.2, 0.02, 0.15, 0.03
    assert np.exp(log_scores).tolist() == pytest.approx([0.06, 0.2, 0.02, 0.15, 0.03])
    assert in_explanation.tolist() == [False, True, False, True, False]  # both attributes in the top 2


def test_unknown_attribute_lists_close_matches():
    with pytest.raises(SaywhyError) as error:
        query_indices(PdfExplainer(PDF, 1), ["red crwn"])
    assert "red crown" in str(error.value) and "\n" not in str(error.value)
    assert query_indices(PdfExplainer(PDF, 1), ["Long  Tail", "red crown"]) == [2, 0]


def test_a_filter_that_fires_on_red_crown_images_retrieves_them():
    pooled = np.array([[4.0, 1.0, 0.0], [3.0, 0.0, 1.0], [0.0, 4.0, 1.0], [1.0, 3.0, 0.0], [0.0, 0.0, 5.0]])
    counts = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]]))
    explainer = Explainer(ExplainerConfig.paper(top_k=1, min_df=1)).fit(
        pooled, counts, VOCABULARY, np.eye(3), ["001.Red_Bird", "002.Blue_Bird", "003.Tail_Bird"])
    order, _, in_explanation = rank_images(explainer, pooled, ["red crown"])
    assert set(order[:2].tolist()) == {0, 1}
    assert in_explanation.tolist() == [True, True, False, False, False]


def test_frequent_attributes_count_images_not_occurrences():
    docs = [["red crown", "red crown", "long tail"], ["long tail", "blue wing"], None, ["blue wing"]]
    assert frequent_attributes(docs, n=3) == ["blue wing", "long tail", "red crown"]
    assert frequent_attributes(docs, n=3, vocabulary=["red crown", "long tail"]) == ["long tail", "red crown"]


def test_table2_on_hand_made_images():
    documents = [["red crown", "red crown", "long tail", "tiny bird"], ["blue wing", "tiny bird"],
                 ["blue wing", "long tail", "tiny bird"], ["red crown", "long tail", "tiny bird"], None]
    evaluation = evaluate_attribute_retrieval(PdfExplainer(PDF, top_k=1), rows(5), documents, n_attributes=2, k=2)
    report = evaluation.report
    assert report.attributes == ["long tail", "blue wing"]  # 3 images, then 2 (ties alphabetical); "tiny bird" unknown
    assert evaluation.skipped == {"images without captions": 1, "frequent caption attributes outside the vocabulary": 1}
    assert report.n_images == 4
    # top-1 explanations of images 0-3: red crown, red crown, blue wing, long tail
    assert report.method.counts == {"tp": [1, 1], "fp": [0, 0], "fn": [2, 1], "tn": [1, 2]}
    assert report.method.macro["recall"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert report.method.macro["true_negative_rate"] == 1.0
    assert report.method.macro["precision"] == 1.0
    assert report.method.macro["accuracy"] == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert report.method.macro["precision_at_2"] == 0.5
    # long tail ranks 3, 1, 0, 2 (hits 1, 3, 4); blue wing ranks 2, 0, 3, 1 (hits 1, 4)
    assert report.method.macro["average_precision"] == pytest.approx(((1 + 2 / 3 + 3 / 4) / 3 + (1 + 2 / 4) / 2) / 2)
    assert [report.random.counts["tp"][a] + report.random.counts["fp"][a] for a in range(2)] == [1, 1]


def test_images_without_captions_only_are_an_error():
    with pytest.raises(SaywhyError, match="captions"):
        evaluate_attribute_retrieval(PdfExplainer(PDF, 1), rows(2), [None, None])


# ----- Figure 9 and the contact sheet -----------------------------------------------------
def test_top_phrases_count_occurrences_and_images():
    stats = top_phrases([["red crown", "red crown", "long tail"], ["long tail"], ["long tail", "blue wing"], None], n=2)
    assert [(p.phrase, p.total, p.images) for p in stats.phrases] == [("long tail", 3, 3), ("red crown", 2, 1)]
    assert stats.n_images == 3 and stats.n_distinct == 3
    assert stats.to_dict()["phrases"][0] == {"phrase": "long tail", "total": 3, "images": 3}
    assert stats.skipped == {"images without captions": 1}


def test_contact_sheet_draws_a_grid_with_grey_tiles_for_unreadable_images(tmp_path):
    red = tmp_path / "red.png"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(red)
    out = contact_sheet([(red, "1. 0.5\nRed Bird"), (tmp_path / "missing.jpg", "2. 0.1")], tmp_path / "sheet.png",
                        columns=5, thumb=64)
    sheet = Image.open(out).convert("RGB")
    assert sheet.size == (2 * 70 + 6, 64 + 2 * 13 + 6 + 6)  # 2 columns of (64 + 6) px, 1 row with 2 label lines
    assert sheet.getpixel((6 + 32, 6 + 32)) == (255, 0, 0)
    assert sheet.getpixel((6 + 70 + 32, 6 + 32)) == (200, 200, 200)


def test_contact_sheet_of_nothing_is_an_error(tmp_path):
    with pytest.raises(SaywhyError, match="nothing"):
        contact_sheet([], tmp_path / "sheet.png")
