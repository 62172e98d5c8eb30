"""How the captions write an attribute's noun: with an article or not, singular or plural.

Attributes are stored as lemmas ("black wing"), which makes the paper's template read
"it has black wing, white belly". People write "black wings" and "a white belly". For
each noun of the vocabulary this module counts, in the fitting captions, how often the
noun is written plural and how often a singular one follows "a"/"an" within two words,
and keeps the plural when it is the majority; a singular noun takes "a"/"an" when the
captions put a determiner before it often enough (``ARTICLE_SHARE``: captions drop many
articles, mass nouns never have one). Nothing is hand-listed: the forms come from the data, and a noun
the captions never write keeps its lemma without an article.

The *object noun* is the noun of the dataset's subject ("bird" in CUB): a noun found in
more than three quarters of the fitting captions, the most common one. Its phrases ("small bird")
describe the whole object, not a part, so sentences say them as an apposition ("a small
brown bird") rather than as something the object "has". Its *vague* adjectives are those
the captions of one image do not agree on more than chance ("a particular bird"): they
say how an annotator writes, not what the image shows (:func:`vague_adjectives`), and
sentences leave them out.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


# Words that make a singular noun definite or indefinite: general English.
DETERMINERS = frozenset({"a", "an", "the", "its", "this", "that", "his", "her", "their", "one"})
# Captions written quickly drop many articles ("has yellow breast"), so a majority vote would
# drop them too; a mass noun ("plumage", "coloring") is almost never written after one. On
# CUB's training captions count nouns have a determiner in 21-89% of their singular uses,
# mass nouns in 10-14%: a noun takes "a"/"an" from 20%.
ARTICLE_SHARE = 0.2
# An adjective of the object noun that annotators of one image agree on no more often than
# this many times chance says nothing about the image ("a particular bird", "a sized bird").
VAGUE_LIFT = 1.5
VAGUE_MIN_CAPTIONS = 20
# Two adjectives that stand beside each other at most this share of what chance predicts
# (and chance predicts at least EXCLUSIVE_MIN_EXPECTED) are not both written ("small tiny").
EXCLUSIVE_SHARE = 0.1
EXCLUSIVE_MIN_EXPECTED = 5.0

# English irregular plurals a caption may use; general English, nothing about birds.
_IRREGULAR_PLURALS = {"foot": "feet", "tooth": "teeth", "goose": "geese", "mouse": "mice", "child": "children",
                      "leaf": "leaves", "knife": "knives", "half": "halves", "wolf": "wolves", "man": "men"}


def plural_candidates(noun: str) -> list[str]:
    """English plural spellings of the last word of ``noun``.

    >>> plural_candidates("wing"), plural_candidates("eye ring")[0], plural_candidates("body")
    (['wings'], 'eye rings', ['bodies', 'bodys'])
    >>> plural_candidates("patch"), plural_candidates("foot")
    (['patches', 'patchs'], ['feet', 'foots'])
    """
    head, _, last = noun.rpartition(" ")
    prefix = head + " " if head else ""
    if last in _IRREGULAR_PLURALS:
        forms = [_IRREGULAR_PLURALS[last], last + "s"]
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        forms = [last[:-1] + "ies", last + "s"]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        forms = [last + "es", last + "s"]
    else:
        forms = [last + "s"]
    return [prefix + form for form in forms]


@dataclass(frozen=True)
class NounForm:
    """How to write a noun: ``written`` (the lemma or a plural) and whether it takes "a"/"an"."""

    written: str
    article: bool


@dataclass
class SurfaceForms:
    """Learned forms per noun, the object noun (None when no noun is that common), and how
    often each adjective comes first when two stand together ("small yellow bird"), the
    object's vague adjectives, and pairs of adjectives never written side by side: not at all
    (``exclusive``: "small tiny") or only with "and" (``conjoined``: "blue and yellow")."""

    nouns: dict[str, NounForm] = field(default_factory=dict)
    object_noun: str | None = None
    adjective_lead: dict[str, float] = field(default_factory=dict)
    vague: list[str] = field(default_factory=list)
    exclusive: list[list[str]] = field(default_factory=list)
    conjoined: list[list[str]] = field(default_factory=list)

    def joined(self, adjectives: Sequence[str]) -> str:
        """Adjectives as the captions put them before a noun: "small brown", "blue and yellow".

        >>> SurfaceForms(conjoined=[["blue", "yellow"]]).joined(["small", "blue", "yellow"])
        'small blue and yellow'
        """
        pairs = {frozenset(p) for p in self.conjoined}
        out = ""
        for i, a in enumerate(adjectives):
            if i:
                out += " and " if frozenset((adjectives[i - 1], a)) in pairs else " "
            out += a
        return out

    def compatible(self, adjectives: Sequence[str]) -> list[str]:
        """``adjectives`` (in order) without any that captions never write beside an earlier one.

        >>> SurfaceForms(exclusive=[["small", "tiny"]]).compatible(["small", "tiny", "green"])
        ['small', 'green']
        """
        pairs = {frozenset(p) for p in self.exclusive}
        kept: list[str] = []
        for a in adjectives:
            if not any(frozenset((a, b)) in pairs for b in kept):
                kept.append(a)
        return kept

    def is_vague(self, term: str) -> bool:
        """Whether ``term`` is a vague adjective on the object noun ("particular bird").

        >>> SurfaceForms(object_noun="bird", vague=["particular"]).is_vague("particular bird")
        True
        """
        adjective, _, noun = term.partition(" ")
        return noun == self.object_noun and adjective in self.vague

    def form(self, noun: str) -> NounForm:
        return self.nouns.get(noun, NounForm(noun, False))

    def order(self, adjectives: Sequence[str]) -> list[str]:
        """Adjectives in the order the captions put them (stable for ties and unseen ones).

        >>> SurfaceForms(adjective_lead={"small": 0.9, "yellow": 0.3}).order(["yellow", "small", "odd"])
        ['small', 'odd', 'yellow']
        """
        return sorted(adjectives, key=lambda a: -self.adjective_lead.get(a, 0.5))

    def to_dict(self) -> dict:
        return {"object_noun": self.object_noun, "adjective_lead": self.adjective_lead,
                "nouns": {n: [f.written, f.article] for n, f in self.nouns.items()}, "vague": list(self.vague),
                "exclusive": [list(p) for p in self.exclusive], "conjoined": [list(p) for p in self.conjoined]}

    @classmethod
    def from_dict(cls, data: dict | None) -> SurfaceForms:
        if not data:
            return cls()
        return cls({n: NounForm(w, bool(a)) for n, (w, a) in data.get("nouns", {}).items()}, data.get("object_noun"),
                   dict(data.get("adjective_lead", {})), list(data.get("vague", [])),
                   [list(p) for p in data.get("exclusive", [])], [list(p) for p in data.get("conjoined", [])])


def _noun(term: str) -> str:
    adjective, _, noun = term.partition(" ")
    return noun or adjective


def object_noun(caption_frequency: dict[str, int], n_captions: int, share: float = 0.75) -> str | None:
    """The noun found in more than ``share`` of the captions, the most common one.

    In CUB's captions "bird" is in 98% of them, the next noun ("beak") in 31%.

    >>> object_noun({"bird": 9, "crown": 4}, 10), object_noun({"crown": 6}, 10)
    ('bird', None)
    """
    if not caption_frequency or n_captions == 0:
        return None
    noun, count = min(caption_frequency.items(), key=lambda kv: (-kv[1], kv[0]))
    return noun if count > share * n_captions else None


def vague_adjectives(images: Sequence[Sequence[Sequence[str]]], noun: str | None, min_lift: float = VAGUE_LIFT,
                     min_captions: int = VAGUE_MIN_CAPTIONS) -> list[str]:
    """Adjectives of ``noun`` that captions of one image share no more than ``min_lift`` times chance.

    ``images[i][j]`` lists the "adjective noun" phrases of caption ``j`` of image ``i``. The
    lift of adjective a is P(two different captions of one image both say "a noun") over
    P(a caption says it)^2. On CUB: "particular" 0.97, "sized" 1.32, "yellow" 8.4. Adjectives
    in fewer than ``min_captions`` captions are not judged.

    >>> same = [[["red bird"]] * 4, [["blue bird"]] * 4]
    >>> style = [[["nice bird"], []] * 2, [["nice bird"], []] * 2]
    >>> vague_adjectives(same + style, "bird", min_captions=2)
    ['nice']
    """
    if noun is None:
        return []
    said: Counter[str] = Counter()
    same = Counter()
    n_captions = pairs = 0
    for captions in images:
        sets = [{p.partition(" ")[0] for p in phrases if p.partition(" ")[2] == noun} for phrases in captions]
        n_captions += len(sets)
        pairs += len(sets) * (len(sets) - 1)
        in_image = Counter(a for s in sets for a in s)
        said.update(in_image)
        same.update({a: m * (m - 1) for a, m in in_image.items()})
    if not pairs:
        return []
    vague = []
    for adjective, count in said.items():
        share = count / n_captions
        if count >= min_captions and (same[adjective] / pairs) <= min_lift * share * share:
            vague.append(adjective)
    return sorted(vague)


def exclusive_adjectives(beside: Counter, together: Counter, max_share: float = EXCLUSIVE_SHARE,
                         min_expected: float = EXCLUSIVE_MIN_EXPECTED) -> list[list[str]]:
    """Pairs of adjectives that often stand beside another adjective but almost never beside each other.

    ``beside[a]``: how often a stands directly next to another adjective; ``together[{a, b}]``:
    how often next to b. Expected under independence: beside[a] beside[b] / (2 * all pairs).
    "small" and "tiny" each stand beside colours hundreds of times and beside each other
    almost never: one says what the other does ("a small tiny bird").

    >>> beside = Counter({"small": 40, "tiny": 40, "green": 40, "brown": 40})
    >>> together = Counter({frozenset(("small", "green")): 20, frozenset(("tiny", "brown")): 20,
    ...                     frozenset(("small", "brown")): 20, frozenset(("tiny", "green")): 20})
    >>> exclusive_adjectives(beside, together)
    [['brown', 'green'], ['small', 'tiny']]
    """
    n_pairs = sum(together.values())
    if not n_pairs:
        return []
    frequent = sorted(a for a, n in beside.items() if n * n / (2 * n_pairs) >= min_expected)
    out = []
    for i, a in enumerate(frequent):
        for b in frequent[i + 1:]:
            expected = beside[a] * beside[b] / (2 * n_pairs)
            if expected >= min_expected and together[frozenset((a, b))] <= max_share * expected:
                out.append([a, b])
    return out


def learn_surface_forms(captions: Iterable[str], terms: Sequence[str],
                        images: Sequence[Sequence[Sequence[str]]] | None = None) -> SurfaceForms:
    """Count each noun's written forms in ``captions`` and find the object noun among them;
    with ``images`` (per image, per caption, its phrases), the object's vague adjectives too.

    >>> forms = learn_surface_forms(["this bird has black wings and a white belly",
    ...                              "it has grey wings and a yellow belly"], ["black wing", "white belly"])
    >>> forms.form("wing"), forms.form("belly")
    (NounForm(written='wings', article=False), NounForm(written='belly', article=True))
    """
    nouns = {_noun(t) for t in terms}
    adjectives = {t.partition(" ")[0] for t in terms if " " in t}
    first: Counter[str] = Counter()  # adjective directly before another adjective
    together: Counter[frozenset[str]] = Counter()  # "small yellow"
    joined: Counter[frozenset[str]] = Counter()  # "blue and yellow"
    joined_side: Counter[str] = Counter()
    second: Counter[str] = Counter()
    longest = max((len(n.split()) for n in nouns), default=1)
    wanted = nouns | {p for n in nouns for p in plural_candidates(n)}  # the only grams whose counts are read
    counts: Counter[str] = Counter()
    after_article: Counter[str] = Counter()
    in_captions: Counter[str] = Counter()  # captions naming the noun, singular or plural
    n_captions = 0
    for caption in captions:
        n_captions += 1
        words = re.findall(r"[a-z]+(?:-[a-z]+)*", caption.lower())
        in_captions.update({w for w in words if w in nouns} | {w[:-1] for w in words if w[:-1] in nouns})
        for a, b in zip(words, words[1:]):
            if a in adjectives and b in adjectives and a != b:
                first[a] += 1
                second[b] += 1
                together[frozenset((a, b))] += 1
        for a, conjunction, b in zip(words, words[1:], words[2:]):
            if conjunction == "and" and a in adjectives and b in adjectives and a != b:
                joined[frozenset((a, b))] += 1
                joined_side.update((a, b))
        for i in range(len(words)):
            article = None
            for n in range(1, longest + 1):
                gram = words[i] if n == 1 else " ".join(words[i:i + n])
                if gram not in wanted:
                    continue
                if article is None:
                    # "a white belly", "the orange and black crown": a determiner up to three words before the noun.
                    article = any(w in DETERMINERS for w in words[max(0, i - 3):i])
                counts[gram] += 1
                after_article[gram] += article
    found: dict[str, NounForm] = {}
    for noun in sorted(nouns):
        singular = counts[noun]
        plural = max(plural_candidates(noun), key=lambda p: counts[p])
        if singular == 0 and counts[plural] == 0:
            continue
        if counts[plural] > singular:
            found[noun] = NounForm(plural, False)
        else:
            found[noun] = NounForm(noun, after_article[noun] >= ARTICLE_SHARE * singular)
    # Smoothed share of "first of two" places, so an adjective seen once stays near the middle.
    lead = {a: round((first[a] + 1) / (first[a] + second[a] + 2), 4) for a in sorted(adjectives) if first[a] + second[a]}
    subject = object_noun({n: in_captions[n] for n in found}, n_captions)
    # Never together, not even with "and": one says what the other does. Together only with "and": colours.
    exclusive = exclusive_adjectives(first + second + joined_side, together + joined)
    conjoined = [p for p in exclusive_adjectives(first + second, together) if p not in exclusive]
    return SurfaceForms(found, subject, lead, vague_adjectives(images, subject) if images is not None else [],
                        exclusive, conjoined)
