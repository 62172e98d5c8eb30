"""The sentence checker (metrics/sentences.py) on hand-written good and bad sentences, and the
writer (explain/sentence.py) passing it."""
import pytest

from saywhy.explain.sentence import because_sentence, natural_sentence
from saywhy.metrics.sentences import SentenceChecker
from saywhy.text.surface import NounForm, SurfaceForms
from saywhy.text.synonyms import SynonymGroups

TERMS = ["yellow breast", "black beak", "long beak", "grey crown", "black wing", "white cheek patch", "long tail",
         "black tail feather", "light blue", "blue wing", "small bird", "yellow bird", "particular bird", "orange bird", "brown plumage"]
FORMS = SurfaceForms({"breast": NounForm("breast", True), "beak": NounForm("beak", True),
                      "crown": NounForm("crown", True), "wing": NounForm("wings", False),
                      "cheek patch": NounForm("cheek patch", True), "tail": NounForm("tail", True),
                      "tail feather": NounForm("tail feathers", False), "plumage": NounForm("plumage", False),
                      "bird": NounForm("bird", True), "blue": NounForm("blue", True)}, "bird", {"small": 0.9}, ["particular"])
SYNONYMS = SynonymGroups([["beak", "bill"], ["grey", "gray"], ["breast", "chest"]])
CHECKER = SentenceChecker(TERMS, FORMS, SYNONYMS)

GOOD = [
    "This is a Carolina Wren, a small bird, because it has a yellow breast, black wings, and a long beak.",
    "This is a Gray Catbird because it has a grey crown and a black and long beak.",  # the name is no synonym
    "This is a Wren because it has a white cheek patch, black tail feathers, and brown plumage.",
    "This is a Wren because it has black wings, a long tail, and a yellow breast.",
    "This is a Wren because it has striped, blue, and black wings and a long tail.",  # "blue" is no noun here
    "This is a Wren: a small yellow bird.",
]
BAD = [
    ("This is a Wren because it has yellow breast, black wings, and a long beak.", {"missing article"}),
    ("This is a Wren because it has black wings and white cheek patch.", {"missing article"}),
    ("This is a Wren because it has a long tail and grey crown.", {"missing article"}),
    ("This is a Wren because it has a yellow beak, and a yellow bill.", {"repeated synonym"}),
    ("This is a Wren because it has a gray and grey crown.", {"repeated synonym"}),
    ("This is a Wren, a yellow bird, because it has a yellow breast.", {"repeated reason"}),
    ("This is a Wren, a particular bird, because it has a long tail.", {"vague word"}),
    ("This is a Wren, a yellow bird, because it has yellow chest and a long bill and beak.",
     {"missing article", "repeated reason", "repeated synonym"}),
]


@pytest.mark.parametrize("sentence", GOOD)
def test_good_sentences_have_no_problem(sentence):
    name = "Gray Catbird" if "Catbird" in sentence else "Wren"
    assert CHECKER.problems(sentence, name) == set()


@pytest.mark.parametrize("sentence, problems", BAD)
def test_bad_sentences_are_caught(sentence, problems):
    assert CHECKER.problems(sentence, "Wren") == problems


def test_report_gives_shares_and_examples():
    sentences = GOOD[:4] + [b for b, _ in BAD[:4]]
    report = CHECKER.report(sentences, ["Gray Catbird" if "Catbird" in s else "Wren" for s in sentences])
    assert report.n_sentences == 8
    assert report.shares["missing article"] == pytest.approx(3 / 8)
    assert report.shares["repeated synonym"] == pytest.approx(1 / 8)
    assert report.shares["repeated reason"] == 0.0
    assert report.examples["missing article"][0] == BAD[0][0]
    assert report.to_dict()["missing_article"] == pytest.approx(3 / 8)


def test_the_paper_template_drops_articles_and_the_natural_writer_does_not():
    attributes = ["yellow bird", "yellow breast", "long beak", "particular bird", "black wing"]
    paper = because_sentence("Wren", attributes)
    natural = natural_sentence("Wren", attributes, FORMS)
    assert "missing article" in CHECKER.problems(paper, "Wren")
    assert CHECKER.problems(natural, "Wren") == set()
    assert natural == "This is a Wren because it has a yellow breast, a long beak, and black wings."


def test_the_writer_keeps_object_adjectives_that_no_reason_says():
    sentence = natural_sentence("Wren", ["small bird", "orange bird", "yellow breast"], FORMS)
    assert sentence == "This is a Wren, a small orange bird, because it has a yellow breast."
    assert CHECKER.problems(sentence, "Wren") == set()


def test_a_group_listing_a_plural_is_one_word_not_two():
    checker = SentenceChecker(TERMS, FORMS, SynonymGroups([["wing", "wings"], ["beak", "bill"]]))
    assert checker.problems("This is a Wren because it has black wings and a long beak.", "Wren") == set()
    assert checker.problems("This is a Wren because it has black wings, a long bill, and a black beak.", "Wren") == {
        "repeated synonym"}
