"""Sentences: merging, articles, class names, lists."""
import pytest

from saywhy.explain.names import readable_class_name, with_article
from saywhy.explain.sentence import because_sentence, class_sentence, contrast_sentence, join_list, merge_adjectives


@pytest.mark.parametrize("raw, readable", [
    ("001.Black_footed_Albatross", "Black-footed Albatross"),
    ("004.Groove_billed_Ani", "Groove-billed Ani"),
    ("034.Gray_crowned_Rosy_Finch", "Gray-crowned Rosy Finch"),
    ("104.American_Pipit", "American Pipit"),
    ("Carolina_Wren", "Carolina Wren"),
])
def test_readable_class_names(raw, readable):
    assert readable_class_name(raw) == readable


@pytest.mark.parametrize("name, expected", [
    ("American Pipit", "an American Pipit"),
    ("Eared Grebe", "an Eared Grebe"),
    ("Indigo Bunting", "an Indigo Bunting"),
    ("Ovenbird", "an Ovenbird"),
    ("European Goldfinch", "a European Goldfinch"),
    ("Carolina Wren", "a Carolina Wren"),
    ("hour hand", "an hour hand"),
    ("unicorn", "a unicorn"),
])
def test_articles(name, expected):
    assert with_article(name) == expected


def test_adjectives_sharing_a_noun_are_merged_in_order():
    assert merge_adjectives(["brown crown", "white breast", "black crown", "white eyebrow", "short beak"]) == [
        "brown and black crown", "white breast", "white eyebrow", "short beak"]


def test_three_adjectives_and_duplicates():
    assert merge_adjectives(["thick beak", "pointy beak", "black beak", "pointy beak"]) == ["thick, pointy, and black beak"]


def test_multiword_noun_merges_on_the_whole_noun():
    assert merge_adjectives(["black cheek patch", "red cheek patch", "red cheek"]) == ["black and red cheek patch", "red cheek"]


def test_paper_figure_one_sentence():
    sentence = because_sentence("Carolina Wren", ["brown crown", "black crown", "white breast", "white eyebrow", "short beak"])
    assert sentence == "This is a Carolina Wren because it has brown and black crown, white breast, white eyebrow, and short beak."


def test_empty_attributes_say_so():
    assert "no known attribute" in because_sentence("Ovenbird", [])


def test_join_list():
    assert join_list([]) == ""
    assert join_list(["x", "y", "z", "w"]) == "x, y, z, and w"


def test_contrast_and_class_sentences():
    assert contrast_sentence("House Wren", "Carolina Wren", ["long tail"], []) == \
        "This is a House Wren and not a Carolina Wren because it has long tail."
    assert class_sentence("Eared Grebe", ["red eye", "black crown"]) == \
        "The network recognizes an Eared Grebe by its red eye and black crown."
