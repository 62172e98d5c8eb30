"""Issue 11's keypoint checks on tiny inputs with known answers: invisible parts, occlusion geometry and
summary, part discrimination, and retrieval thresholds set at a true negative rate."""
from __future__ import annotations

import numpy as np
import pytest

from saywhy.apps.occlusion import occlusion_points, occlusion_test
from saywhy.apps.retrieval import retrieval_at_tnr
from saywhy.data.records import ImageRecord, Keypoint
from saywhy.errors import SaywhyError
from saywhy.metrics.occlusion import OcclusionResult, occlusion_rectangle
from saywhy.metrics.pck import part_discrimination
from saywhy.metrics.retrieval import retrieve_above, thresholds_at_tnr
from saywhy.metrics.visibility import invisible_share

PARTS = {"crown": ["crown"], "tail": ["tail"], "wing": ["left wing", "right wing"], "cap": ["crown"]}


def kp(x, y, visible=True):
    return Keypoint(float(x), float(y), visible)


def test_invisible_share_counts_hidden_parts_and_skips_the_rest():
    keypoints = {"crown": kp(0, 0), "tail": kp(5, 5, False), "left wing": kp(1, 1, False), "right wing": kp(2, 2)}
    result = invisible_share([(["red crown", "long tail", "blue wing", "small bird", "long tail"], keypoints),
                              (["red crown"], {})], PARTS)
    # crown visible, tail hidden, wing visible (one side is), bird names no part, the repeat counts once
    assert (result.scored, result.invisible) == (3, 1)
    assert result.share == pytest.approx(1 / 3)
    assert result.skipped == {"noun names no part": 1, "image has no keypoints": 1}
    both_hidden = {"left wing": kp(1, 1, False), "right wing": kp(2, 2, False)}
    assert invisible_share([(["blue wings"], both_hidden)], PARTS).share == 1.0
    assert invisible_share([], PARTS).share is None


def test_occlusion_rectangle_maps_a_square_through_the_crop_and_stretch():
    # a 100 x 50 box stretched to 20 x 20: x scales by 0.2, y by 0.4
    assert occlusion_rectangle((60.0, 35.0), 10.0, (10, 10, 110, 60), 20) == (8, 12, 9, 11)
    r0, r1, c0, c1 = occlusion_rectangle((-50.0, -50.0), 10.0, (0, 0, 100, 100), 10)
    assert r1 - r0 == 0 and c1 - c0 == 0  # wholly outside: empty


def test_occlusion_summary_counts_strictly_larger_own_drops():
    result = OcclusionResult()
    for own, other in [(3.0, 1.0), (1.0, 1.0), (0.0, 2.0), (5.0, -1.0)]:
        result.add(own, other)
    summary = result.to_dict()
    assert summary["own_part_drops_more"] == 0.5 and summary["cases"] == 4
    assert summary["mean_own_drop"] == pytest.approx(2.25) and summary["mean_other_drop"] == pytest.approx(0.75)


def _record(image_id=1, keypoints=None, bbox=(0.0, 0.0, 100.0, 100.0), path="x.png"):
    return ImageRecord(image_id, __import__("pathlib").Path(path), 1, False, bbox, keypoints or {})


def test_occlusion_points_choose_a_visible_own_part_and_a_distant_other():
    keypoints = {"crown": kp(10, 10), "tail": kp(90, 90), "left wing": kp(15, 12), "right wing": kp(50, 50, False)}
    own, other = occlusion_points(_record(keypoints=keypoints), "red crown", PARTS, seed=0)
    assert own == (10.0, 10.0) and other == (90.0, 90.0)  # the left wing is within one side (20 px) of the crown
    assert occlusion_points(_record(keypoints=keypoints), "red crown", PARTS, 0) == (own, other)  # seeded
    assert occlusion_points(_record(keypoints={"crown": kp(1, 1, False), "tail": kp(9, 9)}), "red cap", PARTS, 0) \
        == "part not visible"
    assert occlusion_points(_record(keypoints=keypoints, bbox=None), "red crown", PARTS, 0) == "image has no bounding box"
    assert occlusion_points(_record(keypoints={"crown": kp(1, 1)}), "red crown", PARTS, 0) \
        == "no other visible part away from it"


def test_part_discrimination_needs_each_peak_nearer_its_own_part():
    keypoints = {"crown": kp(0, 0), "tail": kp(10, 0), "left wing": kp(5, 8, False), "right wing": kp(5, 9, False)}
    apart = [((1, 0), "red crown"), ((9, 0), "red tail")]
    one_wrong = [((1, 0), "red crown"), ((4, 0), "red tail")]  # the tail's peak is nearer the crown
    same = [((1, 0), "red crown"), ((1, 0), "red cap")]  # one part: not a pair
    hidden = [((1, 0), "red crown"), ((5, 8), "blue wing")]  # wing hidden: not a pair
    result = part_discrimination([(apart, keypoints), (one_wrong, keypoints), (same, keypoints),
                                  (hidden, keypoints)], PARTS)
    assert (result.pairs, result.discriminated) == (2, 1) and result.rate == 0.5
    assert result.skipped == {"same part": 1}


def test_thresholds_at_tnr_hold_that_rate_on_the_images_they_were_set_on():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(400, 3))
    relevant = scores + rng.normal(size=(400, 3)) > 1.0
    thresholds = thresholds_at_tnr(scores, relevant, 0.9)
    retrieved = retrieve_above(scores, thresholds)
    for a in range(3):
        negatives = ~relevant[:, a]
        tnr = (~retrieved[negatives, a]).mean()
        assert 0.9 <= tnr < 0.9 + 1.5 / negatives.sum()  # the smallest threshold reaching the rate
    assert thresholds_at_tnr(np.array([[1.0]]), np.array([[True]]), 0.9).tolist() == [-np.inf]
    with pytest.raises(SaywhyError):
        thresholds_at_tnr(scores, relevant, 0.0)


def test_retrieval_at_tnr_applies_training_thresholds_to_test_images():
    vocabulary = ["red crown", "long tail"]
    train_docs = [["red crown"], [], ["long tail"], [], ["red crown", "long tail"]]
    # a perfect ranking: 1 where the attribute is named
    train = np.array([[float("red crown" in d), float("long tail" in d)] for d in train_docs])
    test_docs = [["red crown"], ["long tail"], None, []]
    test = np.array([[float("red crown" in d), float("long tail" in d)] for d in test_docs if d is not None])
    result = retrieval_at_tnr(train, train_docs, test, test_docs, vocabulary, tnr=0.9)
    assert result["method"]["recall"] == 1.0 and result["method"]["true_negative_rate"] == 1.0
    assert result["test_images"] == 3 and result["attributes"] == 2


def test_occlusion_on_a_real_network_drops_scores_where_the_square_is(tiny_noisy_synthbirds):
    session, dataset = tiny_noisy_synthbirds["session"], tiny_noisy_synthbirds["dataset"]
    records = [r for r in dataset.split(train=False) if r.keypoints and r.bbox][:3]
    vocabulary = list(session.explainer.vocabulary_)
    cited = [[t for t in vocabulary if t.split()[-1] in ("crown", "tail", "wing", "beak")][:2] for _ in records]
    out = occlusion_test(session, records, {"method": cited}, [0] * len(records), seed=0)["method"]
    assert out["cases"] > 0 and 0.0 <= out["own_part_drops_more"] <= 1.0
    assert np.isfinite(out["mean_own_drop"]) and np.isfinite(out["mean_other_drop"])
    assert out["ranking_score"]["cases"] == out["cases"] and 0 <= out["ranking_score"]["own_part_drops_more"] <= 1
