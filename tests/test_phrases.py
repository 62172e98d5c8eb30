"""Captions -> "adjective noun" phrases, with spaCy's small English pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest

from saywhy.errors import SaywhyError
from saywhy.text.phrases import PhraseExtractor, doc_phrases

@pytest.fixture(scope="module")
def extractor() -> PhraseExtractor:
    extractor = PhraseExtractor()
    extractor._load()
    return extractor


def sharing_pipeline(extractor: PhraseExtractor, **settings) -> PhraseExtractor:
    """A new extractor that reuses the loaded pipeline (loading takes seconds)."""
    fresh = PhraseExtractor(**settings)
    fresh._nlp = extractor._load()
    return fresh


@pytest.fixture
def parsed(extractor, monkeypatch) -> list[str]:
    """Every caption handed to spaCy during the test."""
    nlp = extractor._load()
    seen: list[str] = []
    original = nlp.pipe

    def counting_pipe(texts, *args, **kwargs):
        texts = list(texts)
        seen.extend(texts)
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(nlp, "pipe", counting_pipe)
    return seen


@pytest.mark.parametrize("caption, phrases", [
    ("this bird has brown and black crown with an orange beak and grey head.",
     ["brown crown", "black crown", "orange beak", "grey head"]),
    ("a brown, black and white crown", ["brown crown", "black crown", "white crown"]),
    ("a small bird with a long, black bill and a white cheek patch.",
     ["small bird", "long bill", "black bill", "white cheek patch"]),
    ("the bird has very long and large brown wings, as well as a black body.",
     ["long wing", "large wing", "brown wing", "black body"]),
    ("this small bird has white tail feathers and a yellow eye ring.",
     ["small bird", "white tail feather", "yellow eye ring"]),
    ("a bird with a spotted breast.", ["spotted breast"]),
    ("it has wings and a tail.", []),
])
def test_bird_captions_give_exact_phrases(extractor, caption, phrases):
    assert extractor.extract([caption]) == [phrases]


def test_noun_tagged_colour_counts_as_adjective(extractor):
    # The tagger tags "orange" NN here, with a 0.2 adjective reading.
    assert extractor.extract(["this bird has a bright orange beak and a grey head."]) == [
        ["bright beak", "orange beak", "grey head"]]


@pytest.mark.parametrize("caption, phrases", [
    ("a red sports car with black leather seats.", ["red sports car", "black leather seat"]),
    ("the dress is a short, red and white dress with thin straps.",
     ["short dress", "red dress", "white dress", "thin strap"]),
])
def test_other_domains_work(extractor, caption, phrases):
    assert extractor.extract([caption]) == [phrases]


def test_case_does_not_change_phrases(extractor):
    assert extractor.extract(["A Bird With A Long, Black Bill.", "a bird with a long, black bill."]) == [
        ["long bill", "black bill"], ["long bill", "black bill"]]


def test_extract_keeps_caption_order_and_repeats(extractor):
    captions = ["a bird with a red crown and a red crown", "it has wings", "a bird with a red crown and a red crown"]
    assert extractor.extract(captions) == [["red crown", "red crown"], [], ["red crown", "red crown"]]


def test_extract_documents_concatenates_captions_of_each_file(extractor):
    documents = [["a red crown.", "a long bill and a red crown."], [], ["it has wings."]]
    assert extractor.extract_documents(documents) == [["red crown", "long bill", "red crown"], [], []]


def test_repeated_captions_are_parsed_once(extractor, parsed):
    sharing_pipeline(extractor).extract(["a red crown.", "a blue wing.", "a red crown."])
    assert sorted(parsed) == ["a blue wing.", "a red crown."]


def test_cache_second_run_parses_nothing(extractor, parsed, tmp_path):
    captions = ["a red crown.", "a small bird with a long, black bill."]
    first = sharing_pipeline(extractor, cache_dir=tmp_path).extract(captions)
    assert len(parsed) == 2
    second = sharing_pipeline(extractor, cache_dir=tmp_path).extract(captions)
    assert second == first
    assert len(parsed) == 2


def test_cache_does_not_load_spacy_when_everything_is_cached(extractor, tmp_path):
    captions = ["a red crown."]
    sharing_pipeline(extractor, cache_dir=tmp_path).extract(captions)
    cached = PhraseExtractor(cache_dir=tmp_path)
    assert cached.extract(captions) == [["red crown"]]
    assert cached._nlp is None


def test_cache_parses_only_new_captions(extractor, parsed, tmp_path):
    sharing_pipeline(extractor, cache_dir=tmp_path).extract(["a red crown."])
    sharing_pipeline(extractor, cache_dir=tmp_path).extract(["a red crown.", "a blue wing."])
    assert parsed == ["a red crown.", "a blue wing."]


def test_cache_key_depends_on_settings(extractor, parsed, tmp_path):
    sharing_pipeline(extractor, cache_dir=tmp_path).extract(["a red crown."])
    sharing_pipeline(extractor, cache_dir=tmp_path, adjective_probability=0.5).extract(["a red crown."])
    assert parsed == ["a red crown.", "a red crown."]


def test_interrupted_cache_write_keeps_previous_file(extractor, tmp_path, monkeypatch):
    sharing_pipeline(extractor, cache_dir=tmp_path).extract(["a red crown."])
    (cache_file,) = tmp_path.iterdir()
    before = cache_file.read_bytes()

    def failing_dumps(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dumps", failing_dumps)
    with pytest.raises(KeyboardInterrupt):
        sharing_pipeline(extractor, cache_dir=tmp_path).extract(["a blue wing."])
    assert list(tmp_path.iterdir()) == [cache_file]
    assert cache_file.read_bytes() == before


def test_an_unreadable_cache_file_is_parsed_again_not_a_stop(extractor, tmp_path):
    cached = sharing_pipeline(extractor, cache_dir=tmp_path)
    expected = cached.extract(["a red crown."])
    (cache_file,) = tmp_path.iterdir()
    cache_file.write_text("{not json\n")
    assert sharing_pipeline(extractor, cache_dir=tmp_path).extract(["a red crown."]) == expected
    assert "red crown" in cache_file.read_text()  # and the cache is whole again

def test_missing_model_names_the_package_to_install():
    with pytest.raises(SaywhyError, match="pip install no-such-spacy-model"):
        PhraseExtractor(model="no_such_spacy_model").extract(["a red crown."])


def test_real_cub_caption_file_gives_expected_phrases(extractor, cub50):
    path = cub50 / "text_c10" / "001.Black_footed_Albatross" / "Black_Footed_Albatross_0001_796111.txt"
    captions = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    (phrases,) = extractor.extract_documents([captions])
    assert phrases.count("black beak") == 4
    assert phrases.count("white ring") == 2
    assert {"long wing", "curved beak", "white breast feather", "gray bird"} <= set(phrases)


# --- the rules on hand-built parses, independent of the statistical model -----------------

def hand_parse(words, pos, deps, heads):
    import spacy
    from spacy.tokens import Doc

    tags = {"DET": "DT", "ADJ": "JJ", "NOUN": "NN", "PRON": "PRP", "CCONJ": "CC"}
    return Doc(spacy.blank("en").vocab, words=words, pos=pos, tags=[tags[p] for p in pos], deps=deps,
               heads=heads, lemmas=words)


def test_noun_tagged_modifier_is_an_adjective_above_the_threshold():
    doc = hand_parse(["a", "bright", "orange", "beak"], ["DET", "ADJ", "NOUN", "NOUN"],
                     ["det", "amod", "compound", "ROOT"], [3, 3, 3, 3])
    assert doc_phrases(doc, np.array([0.0, 0.9, 0.3, 0.0]), threshold=0.05) == ["bright beak", "orange beak"]
    assert doc_phrases(doc, np.array([0.0, 0.9, 0.01, 0.0]), threshold=0.05) == ["bright orange beak"]
    assert doc_phrases(doc) == ["bright orange beak"]


def test_modifier_with_its_own_adjective_stays_a_noun():
    doc = hand_parse(["white", "cheek", "patch"], ["ADJ", "NOUN", "NOUN"], ["amod", "compound", "ROOT"], [1, 2, 2])
    assert doc_phrases(doc, np.array([0.9, 0.9, 0.0])) == ["white cheek patch"]


def test_pronoun_noun_gives_no_phrase():
    doc = hand_parse(["bright", "it"], ["ADJ", "PRON"], ["amod", "ROOT"], [1, 1])
    assert doc_phrases(doc) == []

