"""Turn ranked attributes into the paper's template sentence.

"This is a {class name} because it has {attribute 1}, {attribute 2}, ..., and {attribute n}."
with adjectives that share a noun merged ("brown and black crown").
"""
from __future__ import annotations

from collections.abc import Sequence

from saywhy.explain.names import with_article


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
    >>> merge_adjectives(["pointy beak", "long beak"])
    ['pointy and long beak']
    """
    adjectives: dict[str, list[str]] = {}
    for phrase in attributes:
        adjective, noun = split_attribute(phrase)
        seen = adjectives.setdefault(noun, [])
        if adjective not in seen:
            seen.append(adjective)
    return [" and ".join(a for a in adjs if a) + (" " if any(adjs) else "") + noun for noun, adjs in adjectives.items()]


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


def contrast_sentence(class_name: str, other_name: str, favour: Sequence[str], against: Sequence[str]) -> str:
    """Why X and not Y: what favours X over Y, and what Y would have instead.

    >>> contrast_sentence("Carolina Wren", "House Wren", ["white eyebrow"], ["long tail"])
    'This is a Carolina Wren and not a House Wren because it has white eyebrow; a House Wren would have long tail.'
    """
    sentence = f"This is {with_article(class_name)} and not {with_article(other_name)}"
    if favour:
        sentence += f" because it has {join_list(merge_adjectives(favour))}"
    if against:
        sentence += f"; {with_article(other_name)} would have {join_list(merge_adjectives(against))}"
    return sentence + "."


def class_sentence(class_name: str, attributes: Sequence[str]) -> str:
    """A class-level description (eq. 7-8).

    >>> class_sentence("American Pipit", ["short beak", "brown crown"])
    'The network recognizes an American Pipit by its short beak and brown crown.'
    """
    return f"The network recognizes {with_article(class_name)} by its {join_list(merge_adjectives(attributes))}."
