"""Words that name the same thing ("beak"/"bill", "grey"/"gray"), found in the captions.

Each image has several captions by different annotators. Two words are *synonyms* here
when annotators use them in place of each other: across the captions of one image they
go with the same other words ("black bill" in one caption, "black beak" in another) about
as often as one word goes with itself, yet one caption almost never holds both (nobody
writes "a black beak and a black bill"). Both tests are normalized against chance:

- *within-caption share* ``(W + 0.5) / E``: ``W`` counts captions naming both words on
  the same context word ("black beak" and "black bill"), ``E`` the count expected if each
  caption of an image chose its phrases independently, given how many of that image's
  captions say each (``sum_i m1_i m2_i / C_i``). Substitutes give about 0; parts named
  side by side ("black head", "black beak") about 1. The same share for the words on any
  context (``word_within``) must be low too: annotators keep to one word per caption,
  while a part and a part of it ("primary", "wing") do share captions. It is waived for
  spelling variants and where the same-context share is below ``STRICT_WITHIN``.
- *agreement*: over pairs of different captions of one image, one naming word 1 and the
  other word 2, the share of context words they share (the adjective of a noun, the noun
  of an adjective), less chance (the same share for captions of different images),
  divided by the geometric mean of each word's own excess over chance. Synonyms give
  about 1; two parts of one bird, or "long"/"short", much less; far above 1 means too few
  data. A word whose own agreement is barely above chance (an adjective of one noun only,
  like "pointed" of "beak") is not judged.

Nouns are compared on their adjectives, adjectives on their nouns. Groups are built by
complete linkage (every pair in a group passes both tests), so "belly"~"underbelly" and
"underbelly"~"breast" never chain "belly" into "breast". Each group is written with its
most frequent word. Nothing here knows about birds: the tests read only the captions.

A user file overrides the groups found (:func:`read_synonym_file`): one group per line,
words separated by commas, the first word the one written; ``#`` starts a comment.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from saywhy.errors import SaywhyError

# Defaults chosen on CUB's training captions and synthbirds' (see BENCHMARKS.md, "Synonyms").
MIN_PAIRS = 30          # caption pairs (word 1 in one, word 2 in another of the same image) needed to judge
MAX_WITHIN = 0.17       # (W + 0.5) / E at most: words almost never written in one caption
MIN_AGREEMENT = 0.85    # same context words about as often as each word with itself
MAX_AGREEMENT = 1.25    # far above 1 only when a word barely agrees with itself: too few data to judge
STRICT_WITHIN = 0.01    # same-context share so low that the word-level share is not needed (CUB's
                        # "primary"/"wing", a part of a part, is at 0.025 and must stay apart)
MIN_SELF_EXCESS = 0.1   # a word's own agreement above chance: its context words tell images apart
MIN_CAPTIONS = 5        # captions a word must be in to be considered


@dataclass
class SynonymGroups:
    """Groups of interchangeable words, each written as its first word.

    >>> groups = SynonymGroups([["beak", "bill"], ["grey", "gray"]])
    >>> groups.term("gray bill"), groups.term("red crown"), groups.word("bill"), groups.term("long orange bill")
    ('grey beak', 'red crown', 'beak', 'long orange beak')
    """

    groups: list[list[str]] = field(default_factory=list)
    source: str = "captions"

    def __post_init__(self) -> None:
        self._canonical = {}
        for group in self.groups:
            for word in group:
                if word in self._canonical and self._canonical[word] != group[0]:
                    raise SaywhyError(f"synonym word {word!r} is in two groups: keep it in one")
                self._canonical[word] = group[0]

    def word(self, word: str) -> str:
        """The written form of ``word``'s group (``word`` itself when it has no synonym)."""
        return self._canonical.get(word, word)

    def term(self, term: str) -> str:
        """An "adjective noun" attribute with each part written in its group's form."""
        adjective, _, noun = term.partition(" ")
        if not noun:
            return self.word(adjective)
        if noun not in self._canonical:  # "long orange bill", a compound the parser made: each word in its form
            noun = " ".join(self.word(w) for w in noun.split())
        return f"{self.word(adjective)} {self.word(noun)}"

    def terms(self, terms: Iterable[str]) -> list[str]:
        return [self.term(t) for t in terms]

    def same(self, a: str, b: str) -> bool:
        """Whether two words (or two attributes) name the same thing.

        >>> SynonymGroups([["beak", "bill"]]).same("black bill", "black beak")
        True
        """
        return self.word(a) == self.word(b) or self.term(a) == self.term(b)

    def to_dict(self) -> dict:
        return {"source": self.source, "groups": [list(g) for g in self.groups]}

    @classmethod
    def from_dict(cls, data: dict | None) -> SynonymGroups:
        if not data:
            return cls([], "none")
        return cls([list(g) for g in data.get("groups", [])], str(data.get("source", "captions")))

    def to_text(self) -> str:
        """The groups in the user-file format, one per line."""
        return "".join(", ".join(group) + "\n" for group in self.groups)


def read_synonym_file(path: str | Path) -> SynonymGroups:
    """Groups from a user file: one group per line, comma-separated, first word written.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("# mine\\nbeak, bill\\ngrey,gray  # spelling\\n")
    >>> read_synonym_file(f.name).groups; os.unlink(f.name)
    [['beak', 'bill'], ['grey', 'gray']]
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SaywhyError(f"cannot read the synonym file {path} ({error.__class__.__name__}): "
                          "give a UTF-8 text file with one group per line, words separated by commas") from None
    groups = []
    for number, line in enumerate(text.splitlines(), 1):
        words = [" ".join(w.lower().split()) for w in line.split("#", 1)[0].split(",")]
        words = list(dict.fromkeys(w for w in words if w))
        if len(words) == 1:
            raise SaywhyError(f"{path}:{number}: a group needs at least two words separated by commas, got {line.strip()!r}")
        if words:
            groups.append(words)
    try:
        return SynonymGroups(groups, f"file {path.name}")
    except SaywhyError as error:
        raise SaywhyError(f"{path}: {error}") from None


@dataclass(frozen=True)
class PairEvidence:
    """The two tests for one pair of words (see the module docstring)."""

    within: float      # (W + 0.5) / E on the same context, the within-caption share (0.5: caution for rare words)
    agreement: float   # context agreement over self-agreement
    pairs: int         # cross-caption pairs the agreement is measured on
    word_within: float = float("nan")  # the same share for the words on any context


def learn_synonyms(images: Sequence[Sequence[Sequence[str]]], *, min_pairs: int = MIN_PAIRS,
                   max_within: float = MAX_WITHIN, min_agreement: float = MIN_AGREEMENT,
                   min_captions: int = MIN_CAPTIONS) -> SynonymGroups:
    """Synonym groups of nouns and of adjectives from per-image, per-caption phrases.

    ``images[i][j]`` lists the "adjective noun" phrases of caption ``j`` of image ``i``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> images = []
    >>> for _ in range(60):
    ...     colour = {p: rng.choice(["red", "blue", "green"]) for p in ("crown", "beak", "wing")}
    ...     captions = []
    ...     for _ in range(10):
    ...         beak = rng.choice(["beak", "bill"])
    ...         captions.append([f"{colour['crown']} crown", f"{colour['beak']} {beak}", f"{colour['wing']} wing"])
    ...     images.append(captions)
    >>> [sorted(group) for group in learn_synonyms(images).groups]
    [['beak', 'bill']]
    """
    groups = []
    for role in ("noun", "adjective"):
        evidence, counts = pair_evidence(images, role, min_captions)
        accepted = {pair: e for pair, e in evidence.items() if _passes(pair, e, min_pairs, max_within, min_agreement)}
        groups += _complete_linkage(accepted, counts)
    return SynonymGroups(sorted(groups, key=lambda g: g[0]), "captions")


def _passes(pair: tuple[str, str], e: PairEvidence, min_pairs: int, max_within: float, min_agreement: float) -> bool:
    """Both tests, and the words rarely in one caption at all, unless they are a spelling variant ("grey"/"gray")
    or are almost never on the same noun in one caption (``STRICT_WITHIN``): then one caption may use both
    words for different things, as a writer choosing a word per phrase does."""
    if e.pairs < min_pairs or e.within > max_within or not min_agreement <= e.agreement <= MAX_AGREEMENT:
        return False
    return e.word_within <= max_within or e.within <= STRICT_WITHIN or spelling_variant(*pair)


def spelling_variant(a: str, b: str) -> bool:
    """Same word but for one letter (or a space): "grey"/"gray", "eye ring"/"eyering".

    >>> spelling_variant("grey", "gray"), spelling_variant("eye ring", "eyering"), spelling_variant("head", "bead")
    (True, True, False)
    """
    a, b = a.replace(" ", "").replace("-", ""), b.replace(" ", "").replace("-", "")
    if a == b:
        return True
    if min(len(a), len(b)) < 4 or abs(len(a) - len(b)) > 1 or a[0] != b[0]:
        return False
    from difflib import SequenceMatcher

    matcher = SequenceMatcher(None, a, b)
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal") <= 1


def _split(phrase: str, role: str) -> tuple[str, str]:
    adjective, _, noun = phrase.partition(" ")
    return (noun, adjective) if role == "noun" else (adjective, noun)


def pair_evidence(images: Sequence[Sequence[Sequence[str]]], role: str,
                  min_captions: int = MIN_CAPTIONS) -> tuple[dict[tuple[str, str], PairEvidence], Counter]:
    """Both tests for every pair of ``role`` words ("noun" or "adjective") seen in ``min_captions`` captions."""
    in_captions: Counter[str] = Counter()
    for captions in images:
        for phrases in captions:
            in_captions.update({_split(p, role)[0] for p in phrases if " " in p})
    words = sorted(w for w, n in in_captions.items() if n >= min_captions and w)
    if len(words) < 2:
        return {}, in_captions
    column = {w: k for k, w in enumerate(words)}
    contexts: dict[str, int] = {}
    # X: caption x word (named at all); Y: (caption, context) x word; image index per caption.
    x_rows, x_cols, y_rows, y_cols, image_of = [], [], [], [], []
    for i, captions in enumerate(images):
        for phrases in captions:
            j = len(image_of)
            image_of.append(i)
            pairs = {_split(p, role) for p in phrases if " " in p}
            for w in {w for w, _ in pairs if w in column}:
                x_rows.append(j)
                x_cols.append(column[w])
            for w, c in pairs:
                if w in column:
                    y_rows.append((j, contexts.setdefault(c, len(contexts))))
                    y_cols.append(column[w])
    n_captions, n_words, n_images = len(image_of), len(words), len(images)
    image_of_arr = np.array(image_of, dtype=np.int64)
    x = sp.csr_matrix((np.ones(len(x_rows)), (x_rows, x_cols)), shape=(n_captions, n_words))
    to_image = sp.csr_matrix((np.ones(n_captions), (image_of_arr, np.arange(n_captions))), shape=(n_images, n_captions))
    m = to_image @ x  # images x words: captions naming the word
    per_image = np.asarray(to_image.sum(axis=1)).ravel()
    inverse = sp.diags(1.0 / np.maximum(per_image, 1))
    within = (x.T @ x).toarray()
    expected = (m.T @ inverse @ m).toarray()
    joint = (m.T @ m).toarray()
    n_contexts = max(len(contexts), 1)
    caption_context = np.array([j * n_contexts + c for j, c in y_rows], dtype=np.int64)
    y = sp.csr_matrix((np.ones(len(y_cols)), (caption_context, y_cols)), shape=(n_captions * n_contexts, n_words))
    image_context = image_of_arr[caption_context // n_contexts] * n_contexts + caption_context % n_contexts
    z = sp.csr_matrix((np.ones(len(y_cols)), (image_context, y_cols)), shape=(n_images * n_contexts, n_words))
    same_caption = (y.T @ y).toarray()  # captions with both words on one context ("black beak", "black bill")
    matches = (z.T @ z).toarray() - same_caption  # shared contexts over pairs of different captions
    rows_per_image = np.repeat(1.0 / np.maximum(per_image, 1), n_contexts)
    expected_same = (z.T @ sp.diags(rows_per_image) @ z).toarray()
    pairs = joint - within
    # Chance: the contexts two captions of *different* images share, from each word's context counts.
    counts_wc = _context_counts(y, n_captions, n_contexts)  # words x contexts
    named = np.asarray(x.sum(axis=0)).ravel()
    profile = counts_wc / np.maximum(named, 1)[:, None]
    chance = profile @ profile.T
    with np.errstate(divide="ignore", invalid="ignore"):
        agreement = np.where(pairs > 0, matches / np.maximum(pairs, 1), 0.0)
        excess = agreement - chance
        # A word whose context says little about the image ("short" of a "beak" every bird has)
        # cannot be judged this way: its agreement is noise over noise.
        informative = np.diag(excess) >= MIN_SELF_EXCESS
        own = np.sqrt(np.clip(np.outer(np.diag(excess), np.diag(excess)), 0, None))
        own[~informative, :] = 0
        own[:, ~informative] = 0
        relative = np.where(own > 0, excess / own, 0.0)
        share = (same_caption + 0.5) / np.maximum(expected_same, 1e-12)
        word_share = (within + 0.5) / np.maximum(expected, 1e-12)
    out = {}
    for a in range(n_words):
        for b in range(a + 1, n_words):
            if pairs[a, b] > 0:
                out[(words[a], words[b])] = PairEvidence(float(share[a, b]), float(relative[a, b]), int(pairs[a, b]), float(word_share[a, b]))
    return out, in_captions


def _context_counts(y: sp.csr_matrix, n_captions: int, n_contexts: int) -> np.ndarray:
    coo = y.tocoo()
    out = np.zeros((y.shape[1], n_contexts))
    np.add.at(out, (coo.col, coo.row % n_contexts), coo.data)
    return out


def _complete_linkage(accepted: dict[tuple[str, str], PairEvidence], counts: Counter) -> list[list[str]]:
    """Merge the strongest pairs first; two groups join only when every cross pair was accepted."""
    group_of: dict[str, frozenset[str]] = {}
    order = sorted(accepted, key=lambda p: (-accepted[p].agreement * (1 - min(accepted[p].within, 1)), p))
    for a, b in order:
        ga, gb = group_of.get(a, frozenset([a])), group_of.get(b, frozenset([b]))
        if ga == gb:
            continue
        if all((min(u, v), max(u, v)) in accepted for u in ga for v in gb):
            merged = ga | gb
            for w in merged:
                group_of[w] = merged
    groups = {g for g in group_of.values()}
    return [sorted(g, key=lambda w: (-counts[w], w)) for g in groups]
