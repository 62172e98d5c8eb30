"""Sentence BLEU of explanations (Table 3): exact values on hand-made sentences."""
from __future__ import annotations

import math

import pytest

from saywhy.errors import SaywhyError
from saywhy.metrics.bleu import bleu_by_correctness, bleu_scores, bleu_signature, sentence_bleu


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_a_sentence_identical_to_a_reference_scores_one(order):
    sentence = "This is a Marsh Wren because it has white eyebrow, brown crown, and black tail."
    assert sentence_bleu(sentence, ["a small bird.", sentence], order=order) == pytest.approx(1.0, abs=1e-12)


def test_case_is_ignored():
    assert sentence_bleu("This Bird has a RED crown.", ["this bird has a red crown."]) == pytest.approx(1.0)


def test_unigram_bleu_is_the_share_of_matching_words():
    # "a" matches, "red" and "crown" do not; equal lengths, so no brevity penalty.
    assert sentence_bleu("a red crown", ["a blue wing"], order=1) == pytest.approx(1 / 3)


def test_bleu2_uses_exp_smoothing_for_missing_bigrams():
    # p1 = 1/3; no bigram matches, exp smoothing gives p2 = 1 / (2 * 2 bigrams) = 1/4.
    assert sentence_bleu("a red crown", ["a blue wing"], order=2) == pytest.approx(math.sqrt(1 / 3 * 1 / 4))


def test_brevity_penalty_uses_the_closest_reference_length():
    # 2 words against references of 6 and 4 words: r = 4, BP = exp(1 - 4/2).
    refs = ["a bird with a red crown", "red crown here ok"]
    assert sentence_bleu("red crown", refs, order=1) == pytest.approx(math.exp(-1))
    assert sentence_bleu("red crown", refs[:1], order=1) == pytest.approx(math.exp(-2))


def test_effective_order_does_not_zero_short_sentences():
    assert sentence_bleu("red crown", ["red crown"], order=4) == pytest.approx(1.0)


def test_scores_have_one_column_per_order():
    scores = bleu_scores(["a red crown", "a red crown"], [["a red crown"], ["a blue wing"]], orders=[1, 2])
    assert scores.shape == (2, 2)
    assert scores[0].tolist() == pytest.approx([1.0, 1.0])
    assert scores[1].tolist() == pytest.approx([1 / 3, math.sqrt(1 / 12)])


def test_table3_groups_by_correctness_and_skips_images_without_captions():
    table = bleu_by_correctness(
        ["a red crown", "a red crown", "a red crown", "anything"],
        [["a red crown"], ["a blue wing"], ["a red crown", "x y z"], None],
        [True, False, True, False], orders=[1])
    assert table.means["correct"]["BLEU-1"] == pytest.approx(1.0)
    assert table.means["wrong"]["BLEU-1"] == pytest.approx(1 / 3)
    assert table.means["overall"]["BLEU-1"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert table.counts == {"correct": 2, "wrong": 1, "overall": 3}
    assert table.skipped == {"images without captions": 1}


def test_an_empty_group_has_no_mean():
    table = bleu_by_correctness(["a red crown"], [["a red crown"]], [True])
    assert table.means["wrong"] == {f"BLEU-{n}": None for n in range(1, 5)}
    assert table.counts["wrong"] == 0


def test_mismatched_lengths_and_missing_references_are_errors():
    with pytest.raises(SaywhyError, match="lengths differ"):
        bleu_by_correctness(["a"], [["a"], ["b"]], [True])
    with pytest.raises(SaywhyError, match="reference"):
        sentence_bleu("a red crown", ["", "  "])


def test_signature_names_the_settings():
    signature = bleu_signature(4)
    assert "case:lc" in signature and "tok:13a" in signature and "smooth:exp" in signature and "eff:yes" in signature
    assert "nrefs" not in signature
