"""Occlusion: does hiding the named part lower an attribute's score more than hiding another part?

For a cited attribute whose part has a visible keypoint, two copies of the image are made:
one with a grey square over the attribute's own part, one with the same square over
another visible part (a seeded choice). Each case gives two score drops (score on the
image minus score on the occluded copy); the case counts for the part when the own-part
drop is strictly larger. An explanation that reads the part it names should do so far
more often than the ~50% of chance.

This module holds the geometry (where the square goes on the network's input) and the
summary; :mod:`saywhy.apps.occlusion` runs the network. Pure numpy.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SIDE_FRACTION = 0.2  # the square's side, as a share of max(box width, box height)


def occlusion_rectangle(point: tuple[float, float], side: float, seen_box: Sequence[float],
                        input_size: int) -> tuple[int, int, int, int]:
    """Rows and columns ``(r0, r1, c0, c1)`` (half-open) of a ``side``-pixel square centred on an
    original-image ``point``, on the ``input_size`` x ``input_size`` network input made from the
    ``seen_box`` (x0, y0, x1, y1) region of the image (stretched to a square, so the square
    becomes a rectangle there). Clipped to the input; empty where it falls outside.

    >>> occlusion_rectangle((50.0, 20.0), 20.0, (0, 0, 100, 100), 10)
    (1, 3, 4, 6)
    >>> occlusion_rectangle((50.0, 50.0), 20.0, (0, 0, 200, 100), 10)  # a wider box: narrower columns
    (4, 6, 2, 3)
    """
    x0, y0, x1, y1 = (float(v) for v in seen_box)
    sx, sy = input_size / max(x1 - x0, 1e-9), input_size / max(y1 - y0, 1e-9)
    cx, cy = (point[0] - x0) * sx, (point[1] - y0) * sy
    half_w, half_h = side / 2 * sx, side / 2 * sy
    clip = lambda v: int(min(max(round(v), 0), input_size))  # noqa: E731
    return clip(cy - half_h), clip(cy + half_h), clip(cx - half_w), clip(cx + half_w)


@dataclass
class OcclusionResult:
    """Per case, the score drop for the attribute's own part and for another part."""

    own_drops: list[float] = field(default_factory=list)
    other_drops: list[float] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def add(self, own: float, other: float) -> None:
        self.own_drops.append(float(own))
        self.other_drops.append(float(other))

    @property
    def cases(self) -> int:
        return len(self.own_drops)

    @property
    def own_larger_share(self) -> float | None:
        """Share of cases whose own-part drop is strictly larger (ties count against); None without cases.

        >>> r = OcclusionResult([2.0, 1.0, 0.5, 0.0], [1.0, 3.0, 0.1, 0.0])
        >>> r.own_larger_share
        0.5
        """
        if not self.own_drops:
            return None
        return float(np.mean(np.asarray(self.own_drops) > np.asarray(self.other_drops)))

    def to_dict(self) -> dict:
        own, other = np.asarray(self.own_drops), np.asarray(self.other_drops)
        return {"cases": self.cases, "own_part_drops_more": self.own_larger_share,
                "mean_own_drop": float(own.mean()) if len(own) else None,
                "mean_other_drop": float(other.mean()) if len(other) else None,
                "median_own_minus_other": float(np.median(own - other)) if len(own) else None,
                "skipped": dict(self.skipped)}
