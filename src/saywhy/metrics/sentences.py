"""Is a sentence written as people write? A checker for saywhy's explanation sentences.

Given the sentences, the explainer's vocabulary, its learned surface forms
(:class:`~saywhy.text.surface.SurfaceForms`) and its synonym groups
(:class:`~saywhy.text.synonyms.SynonymGroups`), it reports the share of sentences with:

- a *missing article*: a singular noun that the captions write after a determiner
  ("a white belly") written without one ("it has white belly");
- a *repeated synonym*: two words of one synonym group ("a yellow beak and a yellow bill");
- a *repeated reason*: an adjective of the object phrase that a reason says again
  ("a yellow bird, because it has a yellow breast");
- a *vague word* in the object phrase ("a particular bird").

It reads the sentence shapes :mod:`saywhy.explain.sentence` writes: "This is a X[, a small
bird,] because it has ...", "This is a X: a small bird.", and the paper's template.

>>> from saywhy.text.surface import NounForm, SurfaceForms
>>> from saywhy.text.synonyms import SynonymGroups
>>> forms = SurfaceForms({"belly": NounForm("belly", True), "wing": NounForm("wings", False)}, "bird")
>>> checker = SentenceChecker(["yellow belly", "black wing", "yellow bird"], forms, SynonymGroups())
>>> sorted(checker.problems("This is a Wren, a yellow bird, because it has yellow belly and black wings."))
['missing article', 'repeated reason']
>>> checker.problems("This is a Wren because it has a yellow belly and black wings.")
set()
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from saywhy.text.surface import DETERMINERS, SurfaceForms, plural_candidates
from saywhy.text.synonyms import SynonymGroups

PROBLEMS = ("missing article", "repeated synonym", "repeated reason", "vague word")
_CLAUSE_WORDS = frozenset({"has", "have", "is", "be", "by", "because", "it", "would", "and not", "not"})


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:-[a-z]+)*|,|;", text.lower())


@dataclass
class SentenceReport:
    """Shares of sentences with each problem, and up to three examples of each."""

    n_sentences: int
    shares: dict[str, float]
    examples: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"n_sentences": self.n_sentences, **{k.replace(" ", "_"): v for k, v in self.shares.items()},
                "examples": self.examples}


class SentenceChecker:
    """Checks sentences against one explainer's words: ``terms`` (its vocabulary), ``forms``, ``synonyms``."""

    def __init__(self, terms: Sequence[str], forms: SurfaceForms, synonyms: SynonymGroups):
        self.forms, self.synonyms = forms, synonyms
        self.adjectives = {t.partition(" ")[0] for t in terms if " " in t}
        nouns = {t.partition(" ")[2] for t in terms if " " in t}
        # A synonym is written as its group's word is ("chest" as "breast").
        nouns |= {w for group in synonyms.groups for w in group if synonyms.word(w) in nouns}

        def form(noun: str):
            return forms.form(synonyms.word(noun))

        # Singular nouns that take an article, as word sequences, longest first ("cheek patch" before "patch").
        # A noun that is also an adjective ("blue" of "light blue") is read as the adjective.
        self.article_nouns = sorted((tuple(n.split()) for n in nouns if form(n).article and form(n).written == synonyms.word(n)
                                     and n.split()[-1] not in self.adjectives), key=lambda w: -len(w))
        # Words that end another phrase: nouns in any written form that are not also adjectives.
        self.noun_words = {w for n in nouns for form in (n, forms.form(n).written, *plural_candidates(n))
                           for w in form.split()[-1:] if w not in self.adjectives}
        # A member that is another's plural ("wings" beside "wing") is that member, not a second word.
        self.groups = [[(w, *plural_candidates(w)) for w in group
                        if not any(w in plural_candidates(o) for o in group if o != w)] for group in synonyms.groups]

    def problems(self, sentence: str, class_name: str | None = None) -> set[str]:
        """The problems of one sentence (a subset of ``PROBLEMS``)."""
        text = sentence.lower()
        if class_name:  # "Gray Catbird" is a name, not a second word for "grey"
            text = text.replace(class_name.lower(), " ", 1)
        object_phrase, reasons = _split_sentence(text)
        found = set()
        if self._missing_article(_words(reasons)):
            found.add("missing article")
        if self._repeated_synonym(_words(object_phrase + " , " + reasons)):
            found.add("repeated synonym")
        object_adjectives = {self.synonyms.word(w) for w in _words(object_phrase)
                             if w not in DETERMINERS and w != self.forms.object_noun and w != ","}
        reason_words = {self.synonyms.word(w) for w in _words(reasons)}
        if object_adjectives & reason_words & self.adjectives:
            found.add("repeated reason")
        if object_adjectives & set(self.forms.vague):
            found.add("vague word")
        return found

    def _missing_article(self, words: list[str]) -> bool:
        for i in range(len(words)):
            for noun in self.article_nouns:
                if tuple(words[i:i + len(noun)]) != noun:
                    continue
                after = words[i + len(noun)] if i + len(noun) < len(words) else ""
                if after in self.noun_words:  # "tail" in "tail feathers": part of a longer noun
                    break
                if not self._has_determiner(words, i):
                    return True
                break
        return False

    def _has_determiner(self, words: list[str], start: int) -> bool:
        for word in reversed(words[:start]):
            if word in DETERMINERS:
                return True
            if word in _CLAUSE_WORDS or word == ";" or word in self.noun_words:
                return False
        return False

    def _repeated_synonym(self, words: list[str]) -> bool:
        text = " " + " ".join(words) + " "
        for group in self.groups:
            named = sum(any(f" {form} " in text for form in forms) for forms in group)
            if named > 1:
                return True
        return False

    def report(self, sentences: Sequence[str], class_names: Sequence[str | None] | None = None,
               n_examples: int = 3) -> SentenceReport:
        """Shares of ``sentences`` with each problem (``class_names[i]``: the class sentence i names)."""
        names = list(class_names) if class_names is not None else [None] * len(sentences)
        counts = dict.fromkeys(PROBLEMS, 0)
        examples: dict[str, list[str]] = {p: [] for p in PROBLEMS}
        for sentence, name in zip(sentences, names):
            for problem in self.problems(sentence, name):
                counts[problem] += 1
                if len(examples[problem]) < n_examples:
                    examples[problem].append(sentence)
        n = len(sentences)
        return SentenceReport(n, {p: counts[p] / n if n else 0.0 for p in PROBLEMS},
                              {p: e for p, e in examples.items() if e})


def _split_sentence(text: str) -> tuple[str, str]:
    """(object phrase, reasons) of "this is a x[, a small bird,] because it has ..." and its variants."""
    text = text.strip().rstrip(".")
    head, because, reasons = text.partition(" because it ")
    if not because:
        head, colon, rest = text.partition(": ")  # "this is a x: a small bird"
        return (rest, "") if colon else ("", "")
    _, comma, apposition = head.partition(", ")
    return (apposition.rstrip(", ") if comma else ""), reasons
