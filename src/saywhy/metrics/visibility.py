"""Invisible parts: how often an explanation cites a part the image does not show.

A cited attribute names a part through its noun (``data/attribute_parts.json``, as in
:mod:`saywhy.metrics.pck`). It is *invisible* in an image when every keypoint its noun
lists is annotated not visible there ("black foot" on a bird whose legs are both hidden;
"red eye" is visible when either eye is). An explanation that looks at the image should
cite hidden parts far less often than one that only knows the class (the class caption
frequency baseline of :mod:`saywhy.apps.text_baselines`).

Never scored, only counted: attributes whose noun names no part, images without
keypoints, and attributes whose parts have no keypoint annotation at all in the image.

Pure Python: attribute lists and keypoints in, a share out.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from saywhy.data.records import Keypoint
from saywhy.metrics.pck import PartMap, attribute_parts


@dataclass
class InvisibleResult:
    """Cited part-attributes scored, how many of them name a hidden part, and what was skipped."""

    scored: int = 0
    invisible: int = 0
    skipped: Counter = field(default_factory=Counter)

    @property
    def share(self) -> float | None:
        """Share of scored citations whose part is hidden (None when nothing was scored)."""
        return self.invisible / self.scored if self.scored else None

    def to_dict(self) -> dict:
        return {"invisible_share": self.share, "scored": self.scored, "invisible": self.invisible,
                "skipped": dict(self.skipped)}


def part_visibility(attribute: str, keypoints: Mapping[str, Keypoint], part_map: PartMap) -> bool | str:
    """True if any keypoint of the attribute's part is visible, False if all are hidden,
    or the reason it cannot be said.

    >>> kp = {"left leg": Keypoint(0, 0, False), "right leg": Keypoint(0, 0, False), "crown": Keypoint(5, 5, True)}
    >>> part_visibility("black foot", kp, {"foot": ["left leg", "right leg"]})
    False
    >>> part_visibility("small bird", kp, {"foot": ["left leg", "right leg"]})
    'noun names no part'
    """
    parts = attribute_parts(attribute, part_map)
    if not parts:
        return "noun names no part"
    if not keypoints:
        return "image has no keypoints"
    annotated = [keypoints[p] for p in parts if p in keypoints]
    if not annotated:
        return "part not annotated"
    return any(k.visible for k in annotated)


def invisible_share(cases: Iterable[tuple[Sequence[str], Mapping[str, Keypoint]]], part_map: PartMap) -> InvisibleResult:
    """Over ``(cited attributes, keypoints)`` per image, the share of cited part-attributes whose part is hidden.

    Each attribute counts once per image.

    >>> kp = {"crown": Keypoint(1, 1, True), "belly": Keypoint(2, 2, False)}
    >>> r = invisible_share([(["red crown", "white belly", "small bird"], kp)], {"crown": ["crown"], "belly": ["belly"]})
    >>> r.share, r.scored, dict(r.skipped)
    (0.5, 2, {'noun names no part': 1})
    """
    result = InvisibleResult()
    for attributes, keypoints in cases:
        for attribute in dict.fromkeys(attributes):
            visible = part_visibility(attribute, keypoints, part_map)
            if isinstance(visible, str):
                result.skipped[visible] += 1
                continue
            result.scored += 1
            result.invisible += int(not visible)
    return result
