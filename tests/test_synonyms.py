"""Synonym groups learned from captions, on a domain that is not birds (cars), and their use."""
import json

import numpy as np
import pytest

from saywhy.errors import SaywhyError
from saywhy.text.synonyms import SynonymGroups, learn_synonyms, pair_evidence, read_synonym_file, spelling_variant
from saywhy.text.vocabulary import AttributeVocabulary

PARTS = ("hood", "door", "wheel", "roof", "bumper")
COLOURS = ("red", "blue", "black", "white", "grey", "green")
# How annotators name things: one word per caption, chosen by each annotator.
NOUN_WORDS = {"hood": ("hood", "bonnet"), "wheel": ("wheel", "rim")}
ADJECTIVE_WORDS = {"grey": ("grey", "gray")}


def car_captions(n_images=120, n_captions=10, seed=0):
    """Per image, per caption, its "adjective noun" phrases: 2-4 parts named, each with its colour
    (a part is often the same colour as the body, so parts of one car co-occur), and a size
    adjective that annotators disagree on ("long"/"short" are not synonyms)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        body = rng.choice(COLOURS)
        colour = {p: body if rng.random() < 0.5 else rng.choice(COLOURS) for p in PARTS}
        length = rng.choice(["long", "short"])
        captions = []
        for _ in range(n_captions):
            words = {k: rng.choice(v) for k, v in {**NOUN_WORDS, **ADJECTIVE_WORDS}.items()}
            phrases = []
            for part in rng.choice(PARTS, size=rng.integers(2, 5), replace=False):
                adjective = colour[part]
                phrases.append(f"{words.get(adjective, adjective)} {words.get(part, part)}")
            if rng.random() < 0.5:
                said = length if rng.random() < 0.8 else ("short" if length == "long" else "long")
                phrases.append(f"{said} {words['hood']}")
            captions.append(phrases)
        images.append(captions)
    return images


def test_synonyms_are_found_on_a_domain_that_is_not_birds():
    groups = learn_synonyms(car_captions())
    assert sorted(sorted(g) for g in groups.groups) == [["bonnet", "hood"], ["gray", "grey"], ["rim", "wheel"]]


def test_parts_named_together_and_antonyms_are_not_merged():
    images = car_captions()
    nouns, _ = pair_evidence(images, "noun")
    adjectives, _ = pair_evidence(images, "adjective")
    # "red hood" and "red door" share their adjective across captions of one car, but are written side by side.
    assert nouns[("door", "hood")].within > 0.5
    assert nouns[("bonnet", "hood")].within < 0.1 and nouns[("bonnet", "hood")].agreement > 0.85
    # "long" and "short" are never written together either, but annotators of one car do not agree on them.
    assert adjectives[("long", "short")].agreement < 0.5
    groups = learn_synonyms(images)
    assert not groups.same("door", "hood") and not groups.same("long hood", "short hood")
    assert not groups.same("red hood", "black hood")


def test_a_group_is_written_with_its_most_frequent_word():
    images = car_captions()
    for i, captions in enumerate(images):  # two annotators in three say "hood": it is the word written
        for j, phrases in enumerate(captions):
            phrases[:] = [p.replace("bonnet", "hood") if (i + j) % 3 else p for p in phrases]
    groups = learn_synonyms(images)
    assert groups.word("bonnet") == "hood"


def test_groups_never_chain_through_a_middle_word():
    # "a" ~ "b" and "b" ~ "c" pass, "a" ~ "c" does not: complete linkage keeps "c" out of the group.
    from saywhy.text.synonyms import PairEvidence, _complete_linkage

    good = PairEvidence(0.0, 1.0, 100)
    groups = _complete_linkage({("a", "b"): good, ("b", "c"): PairEvidence(0.0, 0.9, 100)}, {"a": 3, "b": 2, "c": 1})
    assert sorted(sorted(g) for g in groups) == [["a", "b"]]


def test_merged_attributes_share_their_counts():
    groups = SynonymGroups([["hood", "bonnet"], ["grey", "gray"]])
    vocabulary = AttributeVocabulary(min_df=2, synonyms=groups).fit([["gray bonnet"], ["grey hood", "grey hood"]])
    assert vocabulary.terms_ == ["grey hood"]  # each alone is in one document, below min_df; merged, in two
    assert vocabulary.transform([["gray bonnet", "grey hood"]]).toarray().tolist() == [[2]]


def test_user_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "synonyms.txt"
    path.write_text("# cars\nhood, bonnet\n\ngrey, gray, Grey  # spellings\n")
    groups = read_synonym_file(path)
    assert groups.groups == [["hood", "bonnet"], ["grey", "gray"]]
    assert read_synonym_file(_write(tmp_path / "again.txt", groups.to_text())).groups == groups.groups
    assert SynonymGroups.from_dict(json.loads(json.dumps(groups.to_dict()))).groups == groups.groups
    with pytest.raises(SaywhyError, match="at least two words"):
        read_synonym_file(_write(tmp_path / "one.txt", "hood\n"))
    with pytest.raises(SaywhyError, match="two groups"):
        read_synonym_file(_write(tmp_path / "twice.txt", "hood, bonnet\ncap, hood\n"))
    with pytest.raises(SaywhyError, match="cannot read"):
        read_synonym_file(tmp_path / "missing.txt")


def test_spelling_variants():
    assert spelling_variant("colour", "color") and spelling_variant("tail feather", "tailfeather")
    assert not spelling_variant("hood", "wood") and not spelling_variant("red", "rod")


def _write(path, text):
    path.write_text(text)
    return path


def test_fit_reads_a_synonym_file_and_describe_prints_the_groups(tiny_noisy_synthbirds, tmp_path, capsys):
    import shutil

    from saywhy.cli import main
    from saywhy.explain.explainer import Explainer

    tiny = tiny_noisy_synthbirds
    home = tmp_path / "home"
    shutil.copytree(tiny["home"], home)
    groups = tmp_path / "mine.txt"
    groups.write_text("beak, bill\n")
    out = tmp_path / "exp"
    assert main(["--quiet", "--home", str(home), "fit", "--model", str(tiny["ckpt"]), "--root", str(tiny["root"]),
                 "--out", str(out), "--min-df", "1", "--attribute-model", "cooccurrence", "--synonyms", str(groups)]) == 0
    explainer = Explainer.load(out)
    assert explainer.synonyms_.groups == [["beak", "bill"]] and explainer.synonyms_.source == "file mine.txt"
    assert not any(t.endswith(" bill") for t in explainer.vocabulary_)
    assert any(t.endswith(" beak") for t in explainer.vocabulary_)
    capsys.readouterr()
    assert main(["--quiet", "--home", str(home), "describe", "--synonyms", "--explainer", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == ["# 1 synonym group(s), from file mine.txt", "beak, bill"]
    # A query may use any word of a group.
    from saywhy.search import query_indices

    beak = next(t for t in explainer.vocabulary_ if t.endswith(" beak"))
    assert query_indices(explainer, [beak.replace("beak", "bill")]) == query_indices(explainer, [beak])


def test_an_explainer_of_format_4_loads_without_groups(tiny_noisy_synthbirds, tmp_path):
    import json
    import shutil

    from saywhy.explain.explainer import Explainer

    folder = tmp_path / "old"
    shutil.copytree(tiny_noisy_synthbirds["exp"], folder)
    meta = json.loads((folder / "explainer.json").read_text())
    meta["format_version"] = 4
    del meta["synonyms"]
    del meta["content_sha256"]  # format 4 files were written before the content digest
    (folder / "explainer.json").write_text(json.dumps(meta))
    assert Explainer.load(folder).synonyms_.groups == []
    meta["format_version"] = 3
    (folder / "explainer.json").write_text(json.dumps(meta))
    with pytest.raises(SaywhyError, match="another saywhy version"):
        Explainer.load(folder)
