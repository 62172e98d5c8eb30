"""The most frequent noun phrases of a caption set (the paper's Figure 9), as data.

A noun phrase here is an "adjective noun" attribute as :mod:`saywhy.text.phrases`
extracts it. Phrases are ranked by total occurrences over all captions, then by the
number of images whose captions contain them, then alphabetically.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from saywhy.data.records import ImageRecord


@dataclass(frozen=True)
class PhraseCount:
    phrase: str
    total: int  # occurrences over all captions
    images: int  # images whose captions contain it at least once


@dataclass
class PhraseStats:
    """Figure 9: the top phrases, over how many images, and what was skipped."""

    phrases: list[PhraseCount]
    n_images: int
    n_distinct: int  # distinct phrases in the whole caption set
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"phrases": [asdict(p) for p in self.phrases], "n_images": self.n_images,
                "n_distinct": self.n_distinct, "skipped": self.skipped}


def top_phrases(documents: Sequence[Sequence[str] | None], n: int = 100) -> PhraseStats:
    """The ``n`` most frequent phrases of per-image phrase lists (None: an image without captions, skipped).

    >>> stats = top_phrases([["red crown", "red crown", "long tail"], ["long tail"], ["long tail"], None], n=2)
    >>> [(p.phrase, p.total, p.images) for p in stats.phrases], stats.skipped
    ([('long tail', 3, 3), ('red crown', 2, 1)], {'images without captions': 1})
    """
    kept = [d for d in documents if d is not None]
    total = Counter(t for d in kept for t in d)
    images = Counter(t for d in kept for t in set(d))
    ranked = sorted(total, key=lambda t: (-total[t], -images[t], t))[:n]
    return PhraseStats([PhraseCount(t, total[t], images[t]) for t in ranked], len(kept), len(total),
                       {"images without captions": len(documents) - len(kept)})


def caption_phrase_stats(records: Sequence[ImageRecord], extractor: Any, n: int = 100) -> PhraseStats:
    """Figure 9 for a set of records: parse their captions with ``extractor`` (a PhraseExtractor)."""
    with_captions = [r for r in records if r.captions is not None]
    parsed = iter(extractor.extract_documents([list(r.captions) for r in with_captions]))
    return top_phrases([next(parsed) if r.captions is not None else None for r in records], n)
