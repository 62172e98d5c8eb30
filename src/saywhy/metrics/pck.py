"""PCK (percentage of correct keypoints) for attribute grounding, the paper's Table 1.

A grounded attribute is a predicted point (x, y) in original image pixels. It is scored
against the keypoint(s) of the part its noun names (``data/attribute_parts.json``):

- correct at alpha when its distance to the keypoint is at most alpha x object size;
- object size = max(bbox width, bbox height), the usual PCK convention for CUB
  (the paper says "object size" without defining it);
- a noun listing several parts (left/right eye, leg, wing) is correct when the point is
  within the threshold of ANY visible one of them: fair to every method, and needs no
  side to be guessed;
- never scored, only counted: attributes whose noun names no part, images without
  keypoints or bounding box, and attributes whose parts are all invisible.

Pure Python/numpy: points in, fractions out.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from saywhy.data.records import Keypoint
from saywhy.errors import SaywhyError

ALPHAS = (0.1, 0.2, 0.3)
PartMap = Mapping[str, Sequence[str]]


def load_attribute_parts(path: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """Noun -> CUB part names, from ``path`` or saywhy's own ``data/attribute_parts.json``."""
    if path is None:
        text = (resources.files("saywhy") / "data" / "attribute_parts.json").read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            raise SaywhyError(f"attribute-part map {path} cannot be read: check the path") from None
    data = json.loads(text)
    return {noun.lower(): tuple(parts) for noun, parts in data["parts"].items()}


def attribute_parts(attribute: str, part_map: PartMap) -> tuple[str, ...]:
    """The parts an "adjective noun" attribute refers to; () when its noun names none.

    The noun is the last word, lowercased; a plural is tried without its "s" / "es".

    >>> attribute_parts("long grey Wings", {"wing": ["left wing", "right wing"]})
    ('left wing', 'right wing')
    """
    words = attribute.lower().split()
    if not words:
        return ()
    noun = words[-1]
    for candidate in (noun, noun[:-1] if noun.endswith("s") else None, noun[:-2] if noun.endswith("es") else None):
        if candidate and candidate in part_map:
            return tuple(part_map[candidate])
    return ()


def object_size(bbox: tuple[float, float, float, float]) -> float:
    """max(width, height) of an (x, y, w, h) bounding box: the PCK normalizer."""
    return float(max(bbox[2], bbox[3]))


@dataclass
class PCKResult:
    """Hits per alpha over the scored (image, attribute) pairs, and what was skipped."""

    alphas: tuple[float, ...] = ALPHAS
    hits: dict[float, int] = field(default_factory=dict)
    scored: int = 0
    skipped: Counter = field(default_factory=Counter)

    @property
    def pck(self) -> dict[float, float]:
        """alpha -> fraction of scored pairs that are correct (0 where nothing was scored)."""
        return {a: (self.hits.get(a, 0) / self.scored if self.scored else 0.0) for a in self.alphas}

    def to_dict(self) -> dict:
        return {"pck": {str(a): v for a, v in self.pck.items()}, "scored": self.scored, "skipped": dict(self.skipped)}


def score_point(point: tuple[float, float], attribute: str, keypoints: Mapping[str, Keypoint],
                bbox: tuple[float, float, float, float] | None, part_map: PartMap,
                alphas: Sequence[float] = ALPHAS) -> dict[float, bool] | str:
    """Correct at each alpha, or the reason the pair is not scored.

    >>> kp = {"crown": Keypoint(10.0, 10.0, True)}
    >>> score_point((14.0, 13.0), "red crown", kp, (0, 0, 50, 40), {"crown": ["crown"]}, (0.1, 0.2))
    {0.1: True, 0.2: True}
    """
    parts = attribute_parts(attribute, part_map)
    if not parts:
        return "noun names no part"
    if not keypoints:
        return "image has no keypoints"
    if bbox is None or object_size(bbox) <= 0:
        return "image has no bounding box"
    visible = [keypoints[p] for p in parts if p in keypoints and keypoints[p].visible]
    if not visible:
        return "part not visible"
    distance = min(float(np.hypot(point[0] - k.x, point[1] - k.y)) for k in visible)
    size = object_size(bbox)
    return {a: distance <= a * size for a in alphas}


def pck(cases: Iterable[tuple[tuple[float, float], str, Mapping[str, Keypoint], tuple | None]],
        part_map: PartMap, alphas: Sequence[float] = ALPHAS) -> PCKResult:
    """PCK over ``(point, attribute, keypoints, bbox)`` cases, with skipped pairs counted by reason.

    >>> kp = {"beak": Keypoint(0.0, 0.0, True)}
    >>> result = pck([((5.0, 0.0), "red beak", kp, (0, 0, 100, 100)),
    ...               ((25.0, 0.0), "red beak", kp, (0, 0, 100, 100))], {"beak": ["beak"]})
    >>> result.pck
    {0.1: 0.5, 0.2: 0.5, 0.3: 1.0}
    """
    result = PCKResult(alphas=tuple(alphas), hits={a: 0 for a in alphas})
    for point, attribute, keypoints, bbox in cases:
        outcome = score_point(point, attribute, keypoints, bbox, part_map, alphas)
        if isinstance(outcome, str):
            result.skipped[outcome] += 1
            continue
        result.scored += 1
        for a, correct in outcome.items():
            result.hits[a] += int(correct)
    return result


def most_frequent_attributes(documents: Iterable[Iterable[str]], part_map: PartMap, n: int = 50,
                             allowed: Iterable[str] | None = None) -> list[str]:
    """The ``n`` attributes in most images (each image counted once) whose noun names a part.

    ``allowed`` restricts to attributes that can be grounded (e.g. in the vocabulary);
    ties are broken alphabetically so the choice is reproducible.

    >>> most_frequent_attributes([["red crown", "red bird"], ["red crown", "blue wing"]],
    ...                          {"crown": ["crown"], "wing": ["left wing"]}, n=1)
    ['red crown']
    """
    allowed = None if allowed is None else set(allowed)
    counts = Counter(t for doc in documents for t in set(doc)
                     if attribute_parts(t, part_map) and (allowed is None or t in allowed))
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


# ----- part discrimination -----------------------------------------------------------------------
@dataclass
class DiscriminationResult:
    """Pairs of attributes of different parts on one image, and how many each peak nearer its own part."""

    pairs: int = 0
    discriminated: int = 0
    skipped: Counter = field(default_factory=Counter)

    @property
    def rate(self) -> float | None:
        return self.discriminated / self.pairs if self.pairs else None

    def to_dict(self) -> dict:
        return {"rate": self.rate, "pairs": self.pairs, "discriminated": self.discriminated, "skipped": dict(self.skipped)}


def _nearest(point: tuple[float, float], keypoints: Sequence[Keypoint]) -> float:
    return min(float(np.hypot(point[0] - k.x, point[1] - k.y)) for k in keypoints)


def part_discrimination(cases: Iterable[tuple[Sequence[tuple[tuple[float, float], str]], Mapping[str, Keypoint]]],
                        part_map: PartMap) -> DiscriminationResult:
    """The part discrimination rate over images given as ``(points, keypoints)``, ``points`` the
    (predicted (x, y), attribute) of each attribute grounded on the image.

    Every pair of the image's attributes whose nouns name disjoint parts, each with a visible
    keypoint, is scored: it is discriminated when each one's point is strictly nearer its own
    part's nearest visible keypoint than the other's. A method that gives every attribute the
    same point never discriminates a pair; independent uniform points do about a quarter of
    the time.

    >>> kp = {"crown": Keypoint(0.0, 0.0, True), "tail": Keypoint(10.0, 0.0, True)}
    >>> parts = {"crown": ["crown"], "tail": ["tail"]}
    >>> part_discrimination([([((1.0, 0.0), "red crown"), ((9.0, 0.0), "red tail")], kp)], parts).rate
    1.0
    >>> part_discrimination([([((1.0, 0.0), "red crown"), ((1.0, 0.0), "red tail")], kp)], parts).rate
    0.0
    """
    result = DiscriminationResult()
    for points, keypoints in cases:
        grounded = []
        for point, attribute in points:
            parts = attribute_parts(attribute, part_map)
            visible = [keypoints[p] for p in parts if p in keypoints and keypoints[p].visible]
            if parts and visible:
                grounded.append((point, set(parts), visible))
        for i in range(len(grounded)):
            for j in range(i + 1, len(grounded)):
                (pa, parts_a, ka), (pb, parts_b, kb) = grounded[i], grounded[j]
                if parts_a & parts_b:
                    result.skipped["same part"] += 1
                    continue
                result.pairs += 1
                result.discriminated += int(_nearest(pa, ka) < _nearest(pa, kb) and _nearest(pb, kb) < _nearest(pb, ka))
    return result
