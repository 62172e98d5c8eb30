"""Surface forms learned from captions: number, article and the object noun."""
from saywhy.text.surface import NounForm, SurfaceForms, learn_surface_forms, plural_candidates

CAPTIONS = [
    "this small bird has black wings and a white belly",
    "a bird with grey wings, a yellow belly and a short beak",
    "the bird has an orange beak and brown wings",
    "small bird with a white cheek patch",
]


def test_plural_nouns_are_written_plural_and_singular_ones_take_an_article():
    forms = learn_surface_forms(CAPTIONS, ["black wing", "white belly", "orange beak", "white cheek patch"])
    assert forms.form("wing") == NounForm("wings", False)
    assert forms.form("belly") == NounForm("belly", True)
    assert forms.form("beak") == NounForm("beak", True)
    assert forms.form("cheek patch") == NounForm("cheek patch", True)


def test_object_noun_is_in_most_captions():
    assert learn_surface_forms(CAPTIONS, ["small bird", "black wing"]).object_noun == "bird"
    assert learn_surface_forms(CAPTIONS, ["black wing", "white belly"]).object_noun is None  # "bird" is no attribute noun


def test_unseen_noun_keeps_its_lemma():
    forms = learn_surface_forms(CAPTIONS, ["red crown"])
    assert forms.form("crown") == NounForm("crown", False)


def test_round_trip_through_json_dict():
    forms = learn_surface_forms(CAPTIONS, ["black wing", "small bird"])
    assert SurfaceForms.from_dict(forms.to_dict()) == forms
    assert SurfaceForms.from_dict(None) == SurfaceForms()


def test_regular_plurals():
    assert plural_candidates("body")[0] == "bodies" and plural_candidates("eye ring") == ["eye rings"]


def test_adjectives_are_ordered_as_the_captions_order_them():
    captions = ["a small yellow bird", "small brown bird", "this small yellow bird has yellow feet"]
    forms = learn_surface_forms(captions, ["small bird", "yellow bird", "brown bird", "yellow foot"])
    assert forms.order(["yellow", "small"]) == ["small", "yellow"]
    assert forms.form("foot") == NounForm("feet", False)
    from saywhy.explain.sentence import natural_sentence

    assert natural_sentence("Wren", ["yellow bird", "small bird"], forms) == "This is a Wren: a small yellow bird."
