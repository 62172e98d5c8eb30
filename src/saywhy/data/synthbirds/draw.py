"""Drawing one synthbirds image: a cluttered background, a perch and a bird.

The bird is built in a canonical frame (facing right, body centred at the origin,
body length about 0.7 units, y pointing down) and then mirrored, rotated, scaled
and moved into the image, so keypoints and the bounding box come from the same
points that are drawn. Drawing happens at twice the size and is reduced at the
end, which smooths edges the way a camera would.

>>> import numpy as np
>>> from saywhy.data.synthbirds.species import SPECIES
>>> bird = draw_bird(SPECIES[0].plumage, np.random.default_rng(0), size=64)
>>> bird.image.size, bird.keypoints["crown"][2]
((64, 64), True)
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from saywhy.data.synthbirds.species import COLOURS, Plumage

SUPERSAMPLE = 2

# Canonical geometry, in bird units. The head is large and the markings thick on
# purpose: they must stay readable once the image is reduced to 64 px.
BODY_A, BODY_B, BODY_TILT = 0.34, 0.22, -0.35  # semi-axes and tilt (radians, front up)
HEAD_C, HEAD_R = np.array([0.30, -0.27]), 0.17
EYE_C, EYE_R = HEAD_C + np.array([0.065, -0.01]), 0.04
BEAK_LENGTH = {"long": 0.32, "short": 0.14}
TAIL_LENGTH = {"long": 0.50, "short": 0.30}


@dataclass
class DrawnBird:
    """One rendered image with the bird's keypoints (x, y, visible) and bounding box (x, y, w, h)."""

    image: Image.Image
    keypoints: dict[str, tuple[float, float, bool]]
    bbox: tuple[float, float, float, float]


def _arc(center: np.ndarray, rx: float, ry: float, t0: float, t1: float, n: int = 24) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([center[0] + rx * np.cos(t), center[1] + ry * np.sin(t)], axis=1)


def _rotate(points: np.ndarray, angle: float, origin=(0.0, 0.0)) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    p = np.asarray(points, dtype=float) - origin
    return np.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1]], axis=1) + origin


def _body_point(x: float, y: float) -> np.ndarray:
    """A point given in the body's own (untilted) frame."""
    return _rotate(np.array([[x, y]]), BODY_TILT)[0]


def bird_shapes(plumage: Plumage) -> dict[str, np.ndarray]:
    """Every region of the bird as a polygon in the canonical frame (facing right).

    Regions are listed in drawing order: later ones cover earlier ones.
    """
    deg = np.pi / 180
    body = lambda t0, t1: _rotate(_arc(np.zeros(2), BODY_A, BODY_B, t0, t1), BODY_TILT)  # noqa: E731
    shapes: dict[str, np.ndarray] = {}
    shapes["tail"] = _tail(plumage)
    shapes["belly"] = body(0, 2 * np.pi)
    shapes["breast"] = np.vstack([body(-30 * deg, 95 * deg), [_body_point(0.02, 0.02)]])
    shapes["back"] = body(165 * deg, 335 * deg)
    shapes["wing"] = _rotate(np.array([
        [0.18, -0.07], [0.04, -0.15], [-0.18, -0.14], [-0.36, -0.06], [-0.47, 0.03],
        [-0.30, 0.08], [-0.05, 0.10], [0.15, 0.05]]), BODY_TILT)
    shapes["head"] = _arc(HEAD_C, HEAD_R, HEAD_R, 0, 2 * np.pi, 32)
    shapes["throat"] = np.vstack([_arc(HEAD_C, HEAD_R, HEAD_R, 5 * deg, 115 * deg), [HEAD_C + [0.02, 0.03]],
                                  [_body_point(0.26, -0.05)]])
    shapes["crown"] = _arc(HEAD_C, HEAD_R, HEAD_R, 215 * deg, 350 * deg)
    shapes["forehead"] = np.vstack([_arc(HEAD_C, HEAD_R, HEAD_R, 298 * deg, 350 * deg, 8),
                                    [HEAD_C + 0.5 * HEAD_R * np.array([np.cos(325 * deg), np.sin(325 * deg)])]])
    shapes["beak"] = _beak(plumage)
    return shapes


def _tail(plumage: Plumage) -> np.ndarray:
    length, root, end = TAIL_LENGTH[plumage.tail_length], 0.06, 0.13
    if plumage.tail_shape == "forked":
        tip = [[length, end], [length * 0.62, 0.0], [length, -end]]
    else:
        tip = _arc(np.array([length - 0.06, 0.0]), 0.06, end, 0.5 * np.pi, -0.5 * np.pi, 12)
    local = np.vstack([[[0.0, root]], tip, [[0.0, -root]]])
    # The tail leaves the rear of the body and points back and down.
    return _rotate(local * [-1, 1], -0.75) + _body_point(-0.26, 0.04)


def _beak(plumage: Plumage) -> np.ndarray:
    length, half = BEAK_LENGTH[plumage.beak_length], 0.05
    base = HEAD_C + [HEAD_R * 0.9, HEAD_R * 0.15]
    t = np.linspace(0, 1, 12)[:, None]
    droop = 0.5 * length if plumage.beak_shape == "curved" else 0.0
    # A quadratic curve from base to tip: straight for a pointy beak, bent down for a curved one.
    tip = base + [length, droop]
    mid_top = base + [length * 0.55, -half * 0.6]
    top = (1 - t) ** 2 * (base - [0, half]) + 2 * t * (1 - t) * mid_top + t**2 * tip
    mid_bottom = base + [length * 0.5, half * 0.8 + droop * 0.4]
    bottom = (1 - t) ** 2 * (base + [0, half]) + 2 * t * (1 - t) * mid_bottom + t**2 * tip
    return np.vstack([top, bottom[::-1]])


def _leg(offset: float) -> list[np.ndarray]:
    """A leg as polylines (shank and three toes), ``offset`` along x for the far leg."""
    hip = _body_point(0.02, BODY_B * 0.9) + [offset, 0]
    foot = hip + [-0.02, 0.17]
    toes = [foot + d for d in ([0.09, 0.005], [0.06, 0.03], [-0.06, 0.005])]
    return [np.array([hip, foot])] + [np.array([foot, toe]) for toe in toes]


class _Frame:
    """Canonical frame to image pixels: mirror, rotate, scale, translate."""

    def __init__(self, facing_left: bool, angle: float, scale: float, offset: np.ndarray):
        self.mirror, self.angle, self.scale, self.offset = facing_left, angle, scale, offset

    def __call__(self, points: np.ndarray) -> np.ndarray:
        p = np.array(points, dtype=float).reshape(-1, 2)
        if self.mirror:
            p[:, 0] = -p[:, 0]
        return _rotate(p, self.angle) * self.scale + self.offset


def _shade(colour: str, rng: np.random.Generator, brightness: float) -> tuple[int, int, int]:
    """A jittered shade of a named colour, kept close enough to stay that colour."""
    rgb = np.array(COLOURS[colour], dtype=float) * brightness * rng.uniform(0.92, 1.06)
    return tuple(int(v) for v in np.clip(rgb + rng.normal(0, 3, 3), 0, 255))


def _dark(rgb: tuple[int, int, int], factor: float = 0.55) -> tuple[int, int, int]:
    return tuple(int(v * factor) for v in rgb)


def _muted(rng: np.random.Generator) -> tuple[int, int, int]:
    """A background colour: low saturation, so it never reads as a bird's colour."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.85))
    return int(r * 255), int(g * 255), int(b * 255)


def draw_background(rng: np.random.Generator, size: int) -> Image.Image:
    """A gradient with blurred clutter shapes (foliage, stones, twigs)."""
    # The gradient is computed on a 2x2 grid and stretched: as smooth, far cheaper.
    corners = np.array([[_muted(rng), _muted(rng)], [_muted(rng), _muted(rng)]], dtype=np.uint8)
    image = Image.fromarray(corners).resize((size, size), Image.BILINEAR, box=(0.5, 0.5, 1.5, 1.5))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(4, 10)):
        x, y = rng.uniform(-0.1, 1.1, 2) * size
        w, h = rng.uniform(0.05, 0.35, 2) * size
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x, y, x + w, y + h], fill=_muted(rng))
        elif kind == 1:
            draw.rectangle([x, y, x + w, y + h], fill=_muted(rng))
        else:
            draw.line([x, y, x + rng.uniform(-1, 1) * w * 2, y + rng.uniform(-1, 1) * h * 2],
                      fill=_muted(rng), width=max(1, int(size * rng.uniform(0.005, 0.02))))
    return image.filter(ImageFilter.GaussianBlur(size * rng.uniform(0.005, 0.02)))


class _Painter:
    """Draws canonical-frame shapes onto the canvas in jittered shades of named colours."""

    def __init__(self, canvas: Image.Image, frame: _Frame, rng: np.random.Generator):
        self.canvas, self.frame, self.rng = canvas, frame, rng
        self.draw = ImageDraw.Draw(canvas)
        self.brightness = rng.uniform(0.9, 1.08)  # the whole bird a little lighter or darker

    def shade(self, colour: str) -> tuple[int, int, int]:
        return _shade(colour, self.rng, self.brightness)

    def polygon(self, points: np.ndarray, colour: str, outline: bool = True) -> None:
        rgb = self.shade(colour)
        self.draw.polygon([tuple(p) for p in self.frame(points)], fill=rgb,
                          outline=_dark(rgb) if outline else None, width=SUPERSAMPLE)

    def lines(self, polylines: list[np.ndarray], colour: str, width: float) -> None:
        rgb = self.shade(colour)
        for line in polylines:
            self.draw.line([tuple(p) for p in self.frame(line)], fill=rgb,
                           width=max(1, int(width * self.frame.scale)))

    def disc(self, center: np.ndarray, radius: float, colour: str | tuple[int, int, int]) -> None:
        x, y = self.frame(center)[0]
        r = radius * self.frame.scale
        fill = self.shade(colour) if isinstance(colour, str) else colour
        self.draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)

    def pattern(self, polygon: np.ndarray, pattern: tuple[str, str | None]) -> None:
        """Spots or stripes of the pattern's colour inside ``polygon`` (already filled)."""
        kind, colour = pattern
        if kind == "solid":
            return
        region = Image.new("L", self.canvas.size, 0)
        ImageDraw.Draw(region).polygon([tuple(p) for p in self.frame(polygon)], fill=255)
        marks = Image.new("L", self.canvas.size, 0)
        draw = ImageDraw.Draw(marks)
        lo, hi = polygon.min(axis=0), polygon.max(axis=0)
        scale = self.frame.scale
        if kind == "spotted":  # a jittered grid of dots, each a few pixels wide at 64 px
            radius = 0.038 * scale
            for x in np.arange(lo[0], hi[0], 0.1):
                for y in np.arange(lo[1], hi[1], 0.09):
                    cx, cy = self.frame([x + self.rng.uniform(0, 0.05), y + self.rng.uniform(0, 0.04)])[0]
                    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
        else:  # striped: slanted bars across the part
            for x in np.arange(lo[0] - 0.3, hi[0] + 0.3, 0.11):
                ends = self.frame([[x, lo[1] - 0.1], [x + 0.12, hi[1] + 0.1]])
                draw.line([tuple(p) for p in ends], fill=255, width=max(1, int(0.04 * scale)))
        mask = Image.fromarray(np.minimum(np.asarray(region), np.asarray(marks)))
        self.canvas.paste(self.shade(colour), mask=mask)


def _choose_frame(points: np.ndarray, rng: np.random.Generator, big: int) -> _Frame:
    """A random pose: facing, small rotation, a scale giving 55-78% of the width, a place inside."""
    facing_left, angle = bool(rng.random() < 0.5), rng.uniform(-0.2, 0.2)
    unit = _Frame(facing_left, angle, 1.0, np.zeros(2))(points)
    lo, hi = unit.min(axis=0), unit.max(axis=0)
    scale = min(big * rng.uniform(0.55, 0.78) / (hi[0] - lo[0]), 0.9 * big / (hi[1] - lo[1]))
    margin = 0.03 * big
    offset = np.array([rng.uniform(margin - lo[k] * scale, big - margin - hi[k] * scale) for k in (0, 1)])
    return _Frame(facing_left, angle, scale, offset)


def _paint_bird(painter: _Painter, plumage: Plumage, shapes: dict[str, np.ndarray],
                near_leg: list[np.ndarray], far_leg: list[np.ndarray] | None) -> None:
    """The bird, back to front: far leg, tail, near leg, body, wing, head, face, beak."""
    if far_leg is not None:
        painter.lines(far_leg, plumage.leg, 0.03)
    painter.polygon(shapes["tail"], plumage.tail)
    painter.lines(near_leg, plumage.leg, 0.035)
    painter.polygon(shapes["belly"], plumage.belly)
    painter.pattern(shapes["belly"], plumage.belly_pattern)
    painter.polygon(shapes["breast"], plumage.breast, outline=False)
    painter.pattern(shapes["breast"], plumage.breast_pattern)
    painter.polygon(shapes["back"], plumage.back, outline=False)
    painter.polygon(shapes["wing"], plumage.wing)
    painter.pattern(shapes["wing"], plumage.wing_pattern)
    if plumage.wingbar is not None:
        painter.lines([_rotate(np.array([[-0.04, -0.14], [-0.12, 0.08]]), BODY_TILT)], plumage.wingbar, 0.055)
    painter.polygon(shapes["head"], plumage.nape)
    painter.polygon(shapes["throat"], plumage.throat, outline=False)
    painter.polygon(shapes["crown"], plumage.crown, outline=False)
    painter.polygon(shapes["forehead"], plumage.colour("forehead"), outline=False)
    if plumage.eyebrow is not None:  # a stripe over the eye from the bill towards the nape
        brow = EYE_C + np.array([[0.09, -0.045], [0.03, -0.075], [-0.06, -0.075], [-0.14, -0.05]])
        painter.lines([brow], plumage.eyebrow, 0.045)
    if plumage.eyering is not None:
        painter.disc(EYE_C, EYE_R + 0.03, plumage.eyering)
    painter.disc(EYE_C, EYE_R, plumage.eye)
    painter.disc(EYE_C, EYE_R * 0.4, (5, 5, 5))  # a pupil, so that a black eye still reads as an eye
    painter.polygon(shapes["beak"], plumage.beak)


def draw_bird(plumage: Plumage, rng: np.random.Generator, size: int = 128) -> DrawnBird:
    """One image of a bird with ``plumage`` in a random pose on a cluttered background."""
    big = size * SUPERSAMPLE
    shapes = bird_shapes(plumage)
    near_leg, far_leg = _leg(0.0), _leg(-0.07)
    show_far_leg = rng.random() < 0.5  # CUB often shows both legs, sometimes one
    frame = _choose_frame(np.vstack(list(shapes.values()) + near_leg + far_leg), rng, big)

    # The background is blurred anyway: draw it at the final size, then stretch it.
    canvas = draw_background(rng, size).resize((big, big), Image.BILINEAR)
    if rng.random() < 0.75:  # a perch under the feet, in a muted colour
        foot_y = near_leg[0][1, 1] + 0.01
        ends = frame([[-2.0, foot_y + rng.uniform(-0.1, 0.1)], [2.0, foot_y + rng.uniform(-0.1, 0.1)]])
        ImageDraw.Draw(canvas).line([tuple(p) for p in ends], fill=_dark(_muted(rng), 0.7),
                                    width=int(0.05 * frame.scale))
    _paint_bird(_Painter(canvas, frame, rng), plumage, shapes, near_leg, far_leg if show_far_leg else None)

    image = canvas.reduce(SUPERSAMPLE)
    pixels = np.asarray(image, dtype=float) + rng.normal(0, rng.uniform(2, 7), (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    shown_far_leg = far_leg if show_far_leg else None
    keypoints = _keypoints(shapes, near_leg, shown_far_leg, frame)
    drawn = frame(np.vstack(list(shapes.values()) + near_leg + (shown_far_leg or []))) / SUPERSAMPLE
    lo, hi = np.clip(drawn.min(axis=0), 0, size), np.clip(drawn.max(axis=0), 0, size)
    bbox = tuple(round(float(v), 1) for v in (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]))
    return DrawnBird(image, keypoints, bbox)


def _keypoints(shapes: dict[str, np.ndarray], near_leg: list[np.ndarray], far_leg: list[np.ndarray] | None,
               frame: _Frame) -> dict[str, tuple[float, float, bool]]:
    """CUB's 15 parts in image pixels. A bird facing right shows its right side, as in CUB."""
    near, far = ("left", "right") if frame.mirror else ("right", "left")
    canonical = {
        "back": _body_point(-0.06, -0.18),  # the strip of back above the folded wing
        "beak": shapes["beak"].mean(axis=0),
        "belly": _body_point(-0.14, 0.12),
        "breast": _body_point(0.17, 0.09),
        "crown": HEAD_C + [0.0, -0.8 * HEAD_R],
        "forehead": shapes["forehead"].mean(axis=0),
        f"{near} eye": EYE_C,
        f"{near} leg": near_leg[0][1],
        f"{near} wing": _body_point(-0.15, -0.02),
        "nape": HEAD_C + [-0.8 * HEAD_R, 0.0],
        "tail": shapes["tail"].mean(axis=0),
        "throat": HEAD_C + [0.4 * HEAD_R, 0.75 * HEAD_R],
    }
    if far_leg is not None:
        canonical[f"{far} leg"] = far_leg[0][1]
    out = {}
    for name, point in canonical.items():
        x, y = frame(point)[0] / SUPERSAMPLE
        out[name] = (round(float(x), 1), round(float(y), 1), True)
    for part in (f"{far} eye", f"{far} wing", f"{far} leg"):
        out.setdefault(part, (0.0, 0.0, False))
    return out
