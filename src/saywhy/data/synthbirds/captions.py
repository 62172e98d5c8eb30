"""CUB-style captions for a synthbirds image, written from its true attributes.

Each caption names a few (2-5) of the image's attributes, favouring what a person
would notice: large parts and what sets the species apart. Words vary the way they
do in Reed et al.'s captions (bill/beak, chest/breast, gray/grey), and a small share
of captions carry annotator noise: vague words ("a pretty bird") or a wrong colour.

Every attribute is written attributively ("a red crown", never "the crown is red")
because saywhy extracts attributes as adjective + noun noun chunks. Some choices
come from checking spaCy's en_core_web_sm on these captions (about 95% of named
attributes come back as an ADJ inside a chunk headed by the part word):
"back" after a colour is tagged as an adverb ("a green back" yields no chunk), so
the back is mostly called the "mantle"; plural phrases go first in a list ("a short
tail and grey wings" is read as one chunk); a pattern goes before a single colour on
a singular noun ("a spotted white breast") but after the colours on a plural one
("green spotted wings"), the orders that parse.

>>> import numpy as np
>>> captions = write_captions(["red crown", "short beak", "pointy beak"], np.random.default_rng(0), 2)
>>> len(captions), all(c == c.lower() for c in captions)
(2, True)
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from saywhy.data.synthbirds.species import COLOURS, SPECIES

# Surface words per canonical word, with how often each is used.
NOUN_WORDS: dict[str, dict[str, float]] = {
    "crown": {"crown": 0.75, "cap": 0.25},
    "forehead": {"forehead": 1.0},
    "nape": {"nape": 1.0},
    "throat": {"throat": 1.0},
    "breast": {"breast": 0.6, "chest": 0.4},
    "belly": {"belly": 0.8, "abdomen": 0.2},
    "back": {"mantle": 0.85, "back": 0.15},
    "wing": {"wings": 0.8, "wing": 0.2},
    "tail": {"tail": 1.0},
    "beak": {"beak": 0.55, "bill": 0.45},
    "leg": {"legs": 0.65, "feet": 0.35},
    "eye": {"eyes": 0.7, "eye": 0.3},
    "eyebrow": {"eyebrow": 0.6, "eyebrows": 0.4},
    "eyering": {"eyering": 0.7, "eyerings": 0.3},
    "wingbar": {"wingbars": 0.7, "wingbar": 0.3},
}
PLURAL_WORDS = {"wings", "legs", "feet", "eyes", "eyebrows", "eyerings", "wingbars"}
ADJECTIVE_WORDS: dict[str, dict[str, float]] = {
    "grey": {"grey": 0.5, "gray": 0.5},
    "pointy": {"pointy": 0.5, "pointed": 0.3, "sharp": 0.2},
    "curved": {"curved": 0.7, "hooked": 0.3},
    "spotted": {"spotted": 0.6, "speckled": 0.4},
    "striped": {"striped": 0.6, "streaked": 0.4},
    "solid": {"solid": 0.5, "plain": 0.5},
    "rounded": {"rounded": 0.7, "round": 0.3},
}
LENGTHS = ("long", "short")
SHAPES = ("pointy", "curved", "forked", "rounded")
PATTERN_WORDS = ("spotted", "striped", "solid")


def synonyms() -> dict[str, str]:
    """Every attribute word the captions use, mapped to its canonical word.

    >>> synonyms()["bill"], synonyms()["gray"], synonyms()["red"]
    ('beak', 'grey', 'red')
    """
    out: dict[str, str] = {}
    for canonical, words in {**NOUN_WORDS, **ADJECTIVE_WORDS}.items():
        out.update({word: canonical for word in words})
    for word in (*COLOURS, *LENGTHS, *SHAPES, *PATTERN_WORDS):
        out.setdefault(word, word)
    # The caption parser lemmatizes nouns, and "feet" becomes "foot", which no caption spells.
    out.setdefault("foot", out.get("feet", "leg"))
    return dict(sorted(out.items()))


# How much a person notices each part: big or telling parts get named more often.
NOUN_SALIENCE = {
    "crown": 3.0, "forehead": 0.8, "nape": 1.2, "throat": 2.0, "breast": 3.0, "belly": 2.2,
    "back": 1.5, "wing": 3.0, "tail": 2.2, "beak": 2.8, "leg": 1.0, "eye": 0.8,
    "eyebrow": 3.0, "eyering": 3.0, "wingbar": 2.5,
}


def _rarity() -> dict[str, float]:
    """Share of species lacking each attribute: people name what sets a bird apart."""
    counts = Counter(a for s in SPECIES for a in s.plumage.attributes())
    return {a: 1.0 - n / len(SPECIES) for a, n in counts.items()}


_RARITY = _rarity()


def attribute_weight(attribute: str) -> float:
    """How likely a caption is to name ``attribute``: salience of the part times rarity.

    >>> attribute_weight("red crown") > attribute_weight("black eye")
    True
    """
    adjective, noun = attribute.split()
    plain = 0.3 if adjective == "solid" else 1.0  # "plain breast" is rarely worth saying
    return NOUN_SALIENCE[noun] * plain * (0.4 + _RARITY.get(attribute, 1.0))


def _pick(options: dict[str, float], rng: np.random.Generator) -> str:
    """One word, drawn with the given weights."""
    if len(options) == 1:
        return next(iter(options))
    threshold, total = rng.random() * sum(options.values()), 0.0
    for word, weight in options.items():
        total += weight
        if threshold < total:
            return word
    return word


def _phrase(noun: str, adjectives: list[str], rng: np.random.Generator) -> str:
    """One noun phrase such as "a short pointy black beak" or "black and white spotted wings"."""
    colours = [a for a in adjectives if a in COLOURS]
    lengths = [a for a in adjectives if a in LENGTHS]
    shapes = [a for a in adjectives if a in SHAPES]
    patterns = [a for a in adjectives if a in PATTERN_WORDS]
    colour_words = [_pick(ADJECTIVE_WORDS.get(c, {c: 1.0}), rng) for c in colours]
    if colours and colours[0] not in ("black", "white", "grey", "brown") and rng.random() < 0.1:
        colour_words[0] = "bright " + colour_words[0]
    noun_word = _pick(NOUN_WORDS[noun], rng)
    if patterns and not colours:
        # "striped wings" alone loses its adjective in en_core_web_sm; "a striped wing" keeps it.
        noun_word = min(NOUN_WORDS[noun], key=lambda w: w in PLURAL_WORDS)
    plural = noun_word in PLURAL_WORDS
    pattern_words = [_pick(ADJECTIVE_WORDS.get(p, {p: 1.0}), rng) for p in patterns]
    if len(colours) == 2 or plural:
        # Colours first: "black and white spotted breast", "green spotted wings".
        middle = [" and ".join(colour_words)] * bool(colour_words) + pattern_words
    else:
        middle = pattern_words + colour_words  # "a spotted white breast" (the other order parses badly)
    words = [_pick(ADJECTIVE_WORDS.get(a, {a: 1.0}), rng) for a in lengths + shapes] + middle
    phrase = " ".join(words + [noun_word])
    if plural:
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _is_plural(phrase: str) -> bool:
    return phrase.split()[-1] in PLURAL_WORDS


# Sentence frames: "{}" takes a list of noun phrases; two-slot frames split the list.
FRAMES = ("this bird has {}.", "the bird has {}.", "a bird with {}.", "this is a bird with {}.",
          "this particular bird has {}.", "a bird that has {}.")
TWO_PART_FRAMES = ("this bird has {}, as well as {}.", "the bird has {} and it also has {}.")
VAGUE_FRAMES = ("this small bird has {}.", "a pretty bird with {}.", "a medium sized bird with {}.",
                "this cute little bird has {}.", "a small bird with {}.")


def _join(phrases: list[str], rng: np.random.Generator) -> str:
    if len(phrases) == 1:
        return phrases[0]
    comma = "," if len(phrases) > 2 and rng.random() < 0.4 else ""
    return ", ".join(phrases[:-1]) + f"{comma} and {phrases[-1]}"


def caption(attributes: list[str], rng: np.random.Generator, noise: float) -> tuple[str, list[str]]:
    """One caption and the canonical attributes it names (a wrong colour included, when noisy)."""
    weights = np.array([attribute_weight(a) for a in attributes])
    k = min(len(attributes), int(rng.integers(2, 6)))
    chosen = [attributes[i] for i in rng.choice(len(attributes), size=k, replace=False, p=weights / weights.sum())]
    # Annotator noise, half of it a wrong colour, half a vague phrase.
    noise_kind = ("wrong", "vague")[int(rng.integers(2))] if rng.random() < noise else None
    if noise_kind == "wrong":
        chosen, swapped = _wrong_colour(chosen, attributes, rng)
        noise_kind = None if swapped else "vague"  # nothing coloured to get wrong
    groups: dict[str, list[str]] = {}
    for attribute in chosen:
        adjective, noun = attribute.split()
        groups.setdefault(noun, []).append(adjective)
    phrases = [_phrase(noun, adjectives, rng) for noun, adjectives in groups.items()]
    # Plural phrases first: "a short tail and grey wings" is read as one noun chunk.
    phrases = sorted(phrases, key=lambda p: not _is_plural(p))
    if noise_kind == "vague":
        text = VAGUE_FRAMES[rng.integers(len(VAGUE_FRAMES))].format(_join(phrases, rng))
    elif len(phrases) >= 2 and rng.random() < 0.25:
        cut = int(rng.integers(1, len(phrases)))
        frame = TWO_PART_FRAMES[rng.integers(len(TWO_PART_FRAMES))]
        text = frame.format(_join(phrases[:cut], rng), _join(phrases[cut:], rng))
    else:
        text = FRAMES[rng.integers(len(FRAMES))].format(_join(phrases, rng))
    return text, chosen


def _wrong_colour(chosen: list[str], attributes: list[str], rng: np.random.Generator) -> tuple[list[str], bool]:
    """Swap one named colour for one the part does not have, as careless annotators do."""
    colour_slots = [i for i, a in enumerate(chosen) if a.split()[0] in COLOURS]
    if not colour_slots:
        return chosen, False
    i = colour_slots[int(rng.integers(len(colour_slots)))]
    noun = chosen[i].split()[1]
    wrong = [c for c in COLOURS if f"{c} {noun}" not in attributes]
    return chosen[:i] + [f"{wrong[int(rng.integers(len(wrong)))]} {noun}"] + chosen[i + 1:], True


def write_captions(attributes: list[str], rng: np.random.Generator, n: int, noise: float = 0.05) -> list[str]:
    """``n`` captions for an image with these true attributes; ``noise`` is the share of noisy ones."""
    return [caption(list(attributes), rng, noise)[0] for _ in range(n)]
