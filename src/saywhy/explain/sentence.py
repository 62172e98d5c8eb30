"""Turn ranked attributes into the paper's template sentence.

"This is a {class name} because it has {attribute 1}, {attribute 2}, ..., and {attribute n}."
with adjectives that share a noun merged ("brown and black crown").

With learned :class:`~saywhy.text.surface.SurfaceForms` (saywhy's default), the same
attributes are written the way the captions write them: "This is a Carolina Wren, a
small brown bird, because it has a white eyebrow, black wings, and a short beak." The
object's own phrases become an apposition, nouns take their usual number and article.
"""
from __future__ import annotations

from collections.abc import Sequence

from saywhy.explain.names import with_article
from saywhy.text.surface import SurfaceForms


def split_attribute(phrase: str) -> tuple[str, str]:
    """An attribute is "adjective noun"; the noun may have several words ("cheek patch").

    >>> split_attribute("black cheek patch")
    ('black', 'cheek patch')
    >>> split_attribute("tail")
    ('', 'tail')
    """
    adjective, _, noun = phrase.strip().partition(" ")
    return (adjective, noun) if noun else ("", adjective)


def merge_adjectives(attributes: Sequence[str]) -> list[str]:
    """Merge attributes that share a noun, in order of first appearance; drop duplicates.

    >>> merge_adjectives(["brown crown", "white breast", "black crown", "brown crown"])
    ['brown and black crown', 'white breast']
    >>> merge_adjectives(["pointy beak", "long beak", "black beak"])
    ['pointy, long, and black beak']
    """
    return [join_list([a for a in adjs if a]) + (" " if any(adjs) else "") + noun
            for noun, adjs in _adjectives_by_noun(attributes).items()]


def _adjectives_by_noun(attributes: Sequence[str]) -> dict[str, list[str]]:
    adjectives: dict[str, list[str]] = {}
    for phrase in attributes:
        adjective, noun = split_attribute(phrase)
        seen = adjectives.setdefault(noun, [])
        if adjective not in seen:
            seen.append(adjective)
    return adjectives


def written_parts(attributes: Sequence[str], forms: SurfaceForms, articles: bool = True) -> tuple[list[str], list[str]]:
    """(object adjectives, part phrases as written): merged adjectives, the noun's number and,
    with ``articles``, its article. Object adjectives that a part phrase already says, or
    that the forms call vague, are left out.

    >>> from saywhy.text.surface import NounForm
    >>> forms = SurfaceForms({"wing": NounForm("wings", False), "belly": NounForm("belly", True)}, "bird")
    >>> written_parts(["small bird", "white belly", "black wing", "brown bird", "grey wing"], forms)
    (['small', 'brown'], ['a white belly', 'black and grey wings'])
    >>> written_parts(["yellow bird", "yellow breast"], forms)  # a reason is not repeated
    ([], ['yellow breast'])
    """
    object_adjectives: list[str] = []
    parts = []
    by_noun = _adjectives_by_noun(attributes)
    # The object phrase never repeats a reason ("a yellow bird because it has a yellow breast")
    # and never says a vague word ("a particular bird").
    said = {a for noun, adjectives in by_noun.items() if noun != forms.object_noun for a in adjectives}
    for noun, adjectives in by_noun.items():
        adjectives = forms.order([a for a in adjectives if a])
        if forms.object_noun is not None and noun == forms.object_noun:
            object_adjectives += [a for a in adjectives if a not in said and a not in forms.vague]
            object_adjectives = forms.compatible(object_adjectives)  # never "a small tiny bird"
            continue
        form = forms.form(noun)
        phrase = " ".join(filter(None, [join_list(adjectives), form.written]))
        parts.append(with_article(phrase) if form.article and articles else phrase)
    return object_adjectives, parts


def _object_phrase(object_adjectives: Sequence[str], forms: SurfaceForms) -> str:
    """ "a small brown bird": the object's adjectives (never empty here) before the object noun."""
    return with_article(forms.joined(object_adjectives) + " " + str(forms.object_noun))


def _named(class_name: str, object_adjectives: Sequence[str], forms: SurfaceForms) -> str:
    named = with_article(class_name)
    return f"{named}, {_object_phrase(object_adjectives, forms)}," if object_adjectives else named


def natural_sentence(class_name: str, attributes: Sequence[str], forms: SurfaceForms) -> str:
    """The template written as the captions write: an apposition for the object, articles, plurals.

    >>> from saywhy.text.surface import NounForm
    >>> forms = SurfaceForms({"wing": NounForm("wings", False), "eyebrow": NounForm("eyebrow", True)}, "bird")
    >>> natural_sentence("Carolina Wren", ["small bird", "white eyebrow", "black wing"], forms)
    'This is a Carolina Wren, a small bird, because it has a white eyebrow and black wings.'
    >>> natural_sentence("Carolina Wren", ["small bird"], forms)
    'This is a Carolina Wren: a small bird.'
    """
    object_adjectives, parts = written_parts(attributes, forms)
    if not parts:
        if object_adjectives:
            return f"This is {with_article(class_name)}: {_object_phrase(object_adjectives, forms)}."
        return f"This is {with_article(class_name)}, but no known attribute supports it."
    return f"This is {_named(class_name, object_adjectives, forms)} because it has {join_list(parts)}."


def join_list(items: Sequence[str]) -> str:
    """English list with the paper's serial comma.

    >>> join_list(["a"]), join_list(["a", "b"]), join_list(["a", "b", "c"])
    ('a', 'a and b', 'a, b, and c')
    """
    items = list(items)
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def because_sentence(class_name: str, attributes: Sequence[str]) -> str:
    """The paper's template.

    >>> because_sentence("Carolina Wren", ["brown crown", "white breast", "black crown", "short beak"])
    'This is a Carolina Wren because it has brown and black crown, white breast, and short beak.'
    """
    merged = merge_adjectives(attributes)
    if not merged:
        return f"This is {with_article(class_name)}, but no known attribute supports it."
    return f"This is {with_article(class_name)} because it has {join_list(merged)}."


def contrast_sentence(class_name: str, other_name: str, favour: Sequence[str], against: Sequence[str],
                      forms: SurfaceForms | None = None) -> str:
    """Why X and not Y: what favours X over Y, and what Y would have instead.

    >>> contrast_sentence("Carolina Wren", "House Wren", ["white eyebrow"], ["long tail"])
    'This is a Carolina Wren and not a House Wren because it has white eyebrow; a House Wren would have long tail.'
    >>> from saywhy.text.surface import NounForm
    >>> forms = SurfaceForms({"eyebrow": NounForm("eyebrow", True)}, "bird")
    >>> contrast_sentence("Carolina Wren", "House Wren", ["white eyebrow", "small bird"], ["large bird"], forms)
    'This is a Carolina Wren and not a House Wren because it has a white eyebrow and is a small bird; a House Wren would be a large bird.'
    """
    sentence = f"This is {with_article(class_name)} and not {with_article(other_name)}"
    if favour:
        sentence += " because it " + _clause(favour, forms, "has", "is")
    if against:
        sentence += f"; {with_article(other_name)} would " + _clause(against, forms, "have", "be")
    return sentence + "."


def _clause(attributes: Sequence[str], forms: SurfaceForms | None, have: str, be: str) -> str:
    if forms is None:
        return f"{have} {join_list(merge_adjectives(attributes))}"
    object_adjectives, parts = written_parts(attributes, forms)
    clauses = [f"{have} {join_list(parts)}"] if parts else []
    if object_adjectives:
        clauses.append(f"{be} {_object_phrase(object_adjectives, forms)}")
    return " and ".join(clauses)


def class_sentence(class_name: str, attributes: Sequence[str], forms: SurfaceForms | None = None) -> str:
    """A class-level description (eq. 7-8).

    >>> class_sentence("American Pipit", ["short beak", "brown crown"])
    'The network recognizes an American Pipit by its short beak and brown crown.'
    >>> from saywhy.text.surface import NounForm
    >>> class_sentence("American Pipit", ["small bird", "brown wing"], SurfaceForms({"wing": NounForm("wings", False)}, "bird"))
    'The network recognizes an American Pipit, a small bird, by its brown wings.'
    """
    if forms is None:
        return f"The network recognizes {with_article(class_name)} by its {join_list(merge_adjectives(attributes))}."
    object_adjectives, parts = written_parts(attributes, forms, articles=False)  # "by its short beak"
    named = _named(class_name, object_adjectives, forms)
    if not parts:
        return f"The network recognizes {named.rstrip(',')}."
    return f"The network recognizes {named} by its {join_list(parts)}."
