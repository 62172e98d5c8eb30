"""The synthbirds species, as data: one plumage template per species.

A plumage gives every drawn part a colour plus patterns, shapes and markings; its
``attributes()`` are the canonical "adjective noun" strings ("red crown", "forked
tail") that the images show and the captions name. Confusable pairs are not
declared by hand: they are every two species whose templates differ in at most two
attributes each, so editing a template can never leave a stale pair behind.

>>> SPECIES[0].name
'Crimson Tanager'
>>> "red crown" in SPECIES[0].plumage.attributes()
True
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from itertools import combinations

import numpy as np

# Base RGB per colour word. Saturated and far apart so that shade jitter and JPEG
# never turn one named colour into another, even at 64 px.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 35),
    "orange": (245, 130, 20),
    "yellow": (248, 215, 40),
    "green": (45, 150, 55),
    "blue": (40, 85, 215),
    "brown": (125, 75, 35),
    "black": (22, 22, 24),
    "white": (242, 242, 236),
    "grey": (140, 140, 146),
}
PATTERNS = ("solid", "spotted", "striped")

# (kind, second colour): spots or stripes of the second colour over the part's colour.
Pattern = tuple[str, "str | None"]
SOLID: Pattern = ("solid", None)

# Parts whose colour is an attribute, in the order attributes are listed.
COLOURED_PARTS = (
    "crown", "forehead", "nape", "throat", "breast", "belly", "back",
    "wing", "tail", "beak", "leg", "eye",
)
MARKINGS = ("eyebrow", "eyering", "wingbar")


@dataclass(frozen=True)
class Plumage:
    """How one bird looks. Colours are keys of ``COLOURS``; ``None`` marks an absent marking."""

    crown: str
    nape: str
    throat: str
    breast: str
    belly: str
    back: str
    wing: str
    tail: str
    beak: str = "grey"
    leg: str = "grey"
    eye: str = "black"
    forehead: str | None = None  # None: the crown colour, as in most birds
    breast_pattern: Pattern = SOLID
    belly_pattern: Pattern = SOLID
    wing_pattern: Pattern = SOLID
    beak_length: str = "short"  # long | short
    beak_shape: str = "pointy"  # pointy | curved
    tail_length: str = "long"  # long | short
    tail_shape: str = "rounded"  # rounded | forked
    eyebrow: str | None = None
    eyering: str | None = None
    wingbar: str | None = None

    def colour(self, part: str) -> str:
        """The colour word of a part, resolving the forehead's default."""
        if part == "forehead" and self.forehead is None:
            return self.crown
        return getattr(self, part)

    def attributes(self) -> tuple[str, ...]:
        """Every canonical "adjective noun" attribute this plumage shows, without repeats."""
        out: list[str] = []
        for part in COLOURED_PARTS:
            out.append(f"{self.colour(part)} {part}")
            pattern = getattr(self, f"{part}_pattern", None)
            if pattern is not None:
                kind, second = pattern
                out.append(f"{kind} {part}")
                if second is not None:
                    out.append(f"{second} {part}")
        out += [f"{self.beak_length} beak", f"{self.beak_shape} beak"]
        out += [f"{self.tail_length} tail", f"{self.tail_shape} tail"]
        out += [f"{getattr(self, m)} {m}" for m in MARKINGS if getattr(self, m) is not None]
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Option:
    """An intra-class variation: ``changes`` applied to the plumage with ``probability``."""

    probability: float
    changes: tuple[tuple[str, object], ...]


def option(probability: float, **changes: object) -> Option:
    return Option(probability, tuple(sorted(changes.items())))


@dataclass(frozen=True)
class Species:
    name: str
    plumage: Plumage
    options: tuple[Option, ...] = ()

    def dir_name(self, class_id: int) -> str:
        """CUB's class folder name, e.g. ``001.Crimson_Tanager``."""
        return f"{class_id:03d}.{self.name.replace(' ', '_').replace('-', '_')}"

    def draw_plumage(self, rng: np.random.Generator) -> Plumage:
        """The plumage of one bird: each option applied with its probability."""
        plumage = self.plumage
        for opt in self.options:
            if rng.random() < opt.probability:
                plumage = replace(plumage, **dict(opt.changes))
        return plumage

    def optional_attributes(self) -> tuple[str, ...]:
        """Attributes that only some birds of this species show."""
        canonical = set(self.plumage.attributes())
        out: list[str] = []
        for opt in self.options:
            varied = replace(self.plumage, **dict(opt.changes)).attributes()
            out += [a for a in varied if a not in canonical]
        return tuple(dict.fromkeys(out))

    def varied_fields(self) -> set[str]:
        """Plumage fields an option may change: they cannot tell this species apart."""
        return {name for opt in self.options for name, _ in opt.changes}


# Bases shared by each confusable pair; a pair's second species changes one or two fields.
_TANAGER = Plumage(crown="red", nape="red", throat="red", breast="red", belly="red", back="red",
                   wing="black", tail="black", tail_length="short")
_WARBLER = Plumage(crown="yellow", nape="green", throat="yellow", breast="yellow", belly="white",
                   back="green", wing="green", tail="green", beak="black", wingbar="white",
                   tail_length="short", tail_shape="forked")
_SPARROW = Plumage(crown="brown", nape="grey", throat="white", breast="grey", belly="white",
                   back="brown", wing="brown", tail="brown", leg="brown",
                   wing_pattern=("striped", "black"), eyebrow="white")
_THRUSH = Plumage(crown="brown", nape="brown", throat="white", breast="white", belly="white",
                  back="brown", wing="brown", tail="brown", beak="black", leg="yellow",
                  breast_pattern=("spotted", "black"), tail_length="short")
_FLYCATCHER = Plumage(crown="black", nape="grey", throat="white", breast="white", belly="white",
                      back="grey", wing="black", tail="black", beak="black", leg="black",
                      tail_shape="forked")
_JAY = Plumage(crown="blue", nape="blue", throat="white", breast="white", belly="white", back="blue",
               wing="blue", tail="blue", beak="black", leg="black", wing_pattern=("striped", "black"))
_THRASHER = Plumage(crown="grey", nape="grey", throat="white", breast="white", belly="orange",
                    back="grey", wing="grey", tail="grey", beak="black", leg="black", eye="yellow",
                    breast_pattern=("striped", "grey"), beak_length="long", beak_shape="curved")
_CHICKADEE = Plumage(crown="black", nape="white", throat="black", breast="white", belly="white",
                     back="grey", wing="grey", tail="grey", beak="black", tail_length="short")

SPECIES: tuple[Species, ...] = (
    Species("Crimson Tanager", _TANAGER, (option(0.3, wingbar="white"),)),
    Species("Flame Tanager", replace(_TANAGER, belly="yellow"), (option(0.3, wingbar="white"),)),
    Species("Yellow-crowned Warbler", _WARBLER, (option(0.35, eyering="white"),)),
    Species("Red-crowned Warbler", replace(_WARBLER, crown="red"), (option(0.35, eyering="white"),)),
    Species("White-browed Sparrow", _SPARROW, (option(0.3, breast_pattern=("striped", "brown")),)),
    Species("Yellow-browed Sparrow", replace(_SPARROW, eyebrow="yellow"),
            (option(0.3, breast_pattern=("striped", "brown")),)),
    Species("Spotted Thrush", _THRUSH, (option(0.4, eyering="white"),)),
    Species("Plain Thrush", replace(_THRUSH, breast_pattern=SOLID), (option(0.4, eyering="white"),)),
    Species("Fork-tailed Flycatcher", _FLYCATCHER, (option(0.3, belly="yellow"),)),
    Species("Fan-tailed Flycatcher", replace(_FLYCATCHER, tail_shape="rounded"), (option(0.3, belly="yellow"),)),
    Species("White-throated Jay", _JAY, (option(0.3, eyering="white"),)),
    Species("Black-throated Jay", replace(_JAY, throat="black"), (option(0.3, eyering="white"),)),
    Species("Curve-billed Thrasher", _THRASHER, (option(0.3, wingbar="white"),)),
    Species("Sharp-billed Thrasher", replace(_THRASHER, beak_shape="pointy", breast_pattern=("spotted", "grey")),
            (option(0.3, wingbar="white"),)),
    Species("Black-capped Chickadee", _CHICKADEE, (option(0.35, belly="orange"),)),
    Species("Brown-capped Chickadee", replace(_CHICKADEE, crown="brown"), (option(0.35, belly="orange"),)),
    Species("Golden Oriole", Plumage(crown="yellow", nape="yellow", throat="yellow", breast="yellow",
                                     belly="yellow", back="yellow", wing="black", tail="black",
                                     beak="orange", wingbar="white"),
            (option(0.3, throat="black"),)),
    Species("Indigo Bunting", Plumage(crown="blue", nape="blue", throat="blue", breast="blue", belly="blue",
                                      back="blue", wing="blue", tail="blue", tail_length="short",
                                      tail_shape="forked"),
            (option(0.3, wingbar="black"),)),
    Species("Orange-breasted Robin", Plumage(crown="black", nape="grey", throat="orange", breast="orange",
                                             belly="white", back="grey", wing="grey", tail="black",
                                             beak="yellow", leg="brown", eyering="white"),
            (option(0.35, belly="orange"),)),
    Species("Snowy Gull", Plumage(crown="white", nape="white", throat="white", breast="white", belly="white",
                                  back="grey", wing="grey", tail="white", beak="yellow", leg="yellow",
                                  beak_length="long", tail_length="short"),
            (option(0.3, wingbar="black"),)),
    Species("Black Crow", Plumage(crown="black", nape="black", throat="black", breast="black", belly="black",
                                  back="black", wing="black", tail="black", beak="black", leg="black",
                                  beak_length="long")),
    Species("Green Kingfisher", Plumage(crown="green", nape="green", throat="white", breast="orange",
                                        belly="orange", back="green", wing="green", tail="green", beak="black",
                                        leg="red", wing_pattern=("spotted", "white"), beak_length="long",
                                        tail_length="short"),
            (option(0.3, belly="white"),)),
    Species("Marsh Wren", Plumage(crown="brown", nape="brown", throat="white", breast="white", belly="brown",
                                  back="brown", wing="brown", tail="brown", beak="black", leg="brown",
                                  wing_pattern=("striped", "black"), beak_shape="curved", tail_length="short",
                                  eyebrow="white"),
            (option(0.3, breast_pattern=("spotted", "brown")),)),
    Species("Spotted Starling", Plumage(crown="black", nape="black", throat="black", breast="black",
                                        belly="black", back="black", wing="black", tail="black", beak="yellow",
                                        leg="red", breast_pattern=("spotted", "white"),
                                        belly_pattern=("spotted", "white"), beak_length="long",
                                        tail_length="short"),
            (option(0.3, wing_pattern=("spotted", "white")),)),
)


def species_templates(n_species: int | None = None) -> dict[int, Species]:
    """The species by class id (1-based, as in CUB).

    >>> species_templates()[1].dir_name(1)
    '001.Crimson_Tanager'
    """
    chosen = SPECIES if n_species is None else SPECIES[:n_species]
    return {class_id: species for class_id, species in enumerate(chosen, start=1)}


def confusable_pairs(species: dict[int, Species], max_diff: int = 2) -> list[dict]:
    """Every two species whose canonical attributes differ in 1..``max_diff`` on each side."""
    pairs = []
    for (a, sa), (b, sb) in combinations(sorted(species.items()), 2):
        attrs_a, attrs_b = sa.plumage.attributes(), sb.plumage.attributes()
        a_only = [x for x in attrs_a if x not in attrs_b]
        b_only = [x for x in attrs_b if x not in attrs_a]
        if 0 < len(a_only) <= max_diff and 0 < len(b_only) <= max_diff:
            pairs.append({"a": a, "b": b, "a_only": a_only, "b_only": b_only})
    return pairs


def fixed_fields_differ(a: Species, b: Species) -> bool:
    """Whether two species differ in a field that no option of either can change.

    Only such a field lets every bird of ``a`` be told from every bird of ``b``.
    """
    varied = a.varied_fields() | b.varied_fields()
    return any(
        getattr(a.plumage, f.name) != getattr(b.plumage, f.name)
        for f in fields(Plumage)
        if f.name not in varied
    )
