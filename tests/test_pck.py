"""PCK for attribute grounding: exact fractions on hand-placed points, and what is skipped."""
import pytest

from saywhy.data.records import Keypoint
from saywhy.data.synthbirds import CUB_PARTS
from saywhy.metrics.pck import (
    attribute_parts,
    load_attribute_parts,
    most_frequent_attributes,
    object_size,
    pck,
    score_point,
)

PARTS = {"crown": ["crown"], "wing": ["left wing", "right wing"], "bill": ["beak"], "beak": ["beak"]}
BOX = (0.0, 0.0, 100.0, 50.0)  # object size 100
CROWN = {"crown": Keypoint(50.0, 50.0, True)}


def test_pck_counts_exact_fractions_at_each_alpha():
    # Distances 5, 15, 25 and 35 from the crown, object size 100.
    cases = [((50.0 + d, 50.0), "red crown", CROWN, BOX) for d in (5.0, 15.0, 25.0, 35.0)]
    result = pck(cases, PARTS)
    assert result.scored == 4
    assert result.pck == {0.1: 0.25, 0.2: 0.5, 0.3: 0.75}


def test_a_point_exactly_on_the_threshold_is_correct():
    # A 6-8-10 triangle: distance exactly 10 = 0.1 x 100.
    assert score_point((56.0, 58.0), "red crown", CROWN, BOX, PARTS, (0.1,)) == {0.1: True}
    assert score_point((56.0, 58.1), "red crown", CROWN, BOX, PARTS, (0.1,)) == {0.1: False}


def test_object_size_is_the_longer_bbox_side():
    assert object_size((3.0, 4.0, 40.0, 100.0)) == 100.0
    # Same 15 px error: correct at 0.2 with a 100 px tall box, wrong with a 60 px one.
    assert score_point((65.0, 50.0), "red crown", CROWN, (0, 0, 40, 100), PARTS, (0.2,)) == {0.2: True}
    assert score_point((65.0, 50.0), "red crown", CROWN, (0, 0, 40, 60), PARTS, (0.2,)) == {0.2: False}


def test_left_right_pair_is_correct_near_any_visible_side_only():
    keypoints = {"left wing": Keypoint(10.0, 10.0, False), "right wing": Keypoint(80.0, 10.0, True)}
    assert score_point((10.0, 10.0), "black wing", keypoints, BOX, PARTS, (0.1,)) == {0.1: False}
    assert score_point((82.0, 10.0), "black wing", keypoints, BOX, PARTS, (0.1,)) == {0.1: True}
    both = {"left wing": Keypoint(10.0, 10.0, True), "right wing": Keypoint(80.0, 10.0, True)}
    assert score_point((12.0, 10.0), "black wings", both, BOX, PARTS, (0.1,)) == {0.1: True}


def test_unscorable_pairs_are_skipped_and_counted_never_wrong():
    hidden = {"crown": Keypoint(0.0, 0.0, False)}
    cases = [
        ((50.0, 50.0), "red crown", CROWN, BOX),  # scored, correct
        ((0.0, 0.0), "pretty bird", CROWN, BOX),  # noun names no part
        ((0.0, 0.0), "red crown", {}, BOX),  # no keypoints
        ((0.0, 0.0), "red crown", hidden, BOX),  # part not visible
        ((0.0, 0.0), "red crown", hidden, BOX),
        ((0.0, 0.0), "red crown", CROWN, None),  # no bounding box
    ]
    result = pck(cases, PARTS)
    assert result.scored == 1
    assert result.pck == {0.1: 1.0, 0.2: 1.0, 0.3: 1.0}
    assert dict(result.skipped) == {"noun names no part": 1, "image has no keypoints": 1,
                                    "part not visible": 2, "image has no bounding box": 1}


def test_nothing_scored_gives_zero_not_nan():
    assert pck([], PARTS).pck == {0.1: 0.0, 0.2: 0.0, 0.3: 0.0}


@pytest.mark.parametrize("attribute, parts", [
    ("red crown", ("crown",)),
    ("Long Grey BILL", ("beak",)),  # lowercased, last word
    ("black wings", ("left wing", "right wing")),  # plural stripped
    ("pretty bird", ()),
    ("", ()),
])
def test_attribute_parts_from_the_noun(attribute, parts):
    assert attribute_parts(attribute, PARTS) == parts


def test_shipped_map_covers_the_caption_nouns_and_names_real_parts():
    shipped = load_attribute_parts()
    for noun in ("crown", "cap", "beak", "bill", "breast", "chest", "belly", "throat", "nape", "tail", "wing",
                 "eye", "leg", "feet", "back", "mantle", "forehead"):
        assert noun in shipped, noun
    assert attribute_parts("grey feet", shipped) == ("left leg", "right leg")
    assert attribute_parts("white eyes", shipped) == ("left eye", "right eye")
    assert {part for parts in shipped.values() for part in parts} <= set(CUB_PARTS)


def test_most_frequent_counts_each_image_once_and_keeps_part_nouns():
    documents = [["black wing", "black wing", "black wing", "pretty bird"], ["red crown", "black wing", "pretty bird"],
                 ["red crown", "grey bill", "pretty bird"], ["red crown", "blue wing", "pretty bird"]]
    # Images holding each: red crown 3, black wing 2 (not 4), grey bill 1, blue wing 1; pretty bird has no part.
    assert most_frequent_attributes(documents, PARTS, n=2) == ["red crown", "black wing"]
    assert most_frequent_attributes(documents, PARTS, n=4) == ["red crown", "black wing", "blue wing", "grey bill"]
    assert most_frequent_attributes(documents, PARTS, n=5, allowed={"grey bill"}) == ["grey bill"]
