"""synthbirds: a seeded dataset of drawn birds in the CUB-200-2011 layout, with captions.

The embedded default dataset of saywhy. Unlike CUB it comes with the truth the
paper's experiments need and CUB lacks: every image's attributes, the species
templates, confusable species pairs and which labels were flipped.

>>> from saywhy.data.synthbirds import SynthConfig, generate, load_truth
>>> root = generate("/tmp/synthbirds_small", SynthConfig(n_images=48, image_size=64), progress=False)
>>> len(load_truth(root)["species"])
24

Modules: ``species`` (templates as data), ``draw`` (one image), ``captions``
(CUB-style sentences and synonyms), ``writer`` (layout on disk, caching).
"""
from __future__ import annotations

from saywhy.data.synthbirds.captions import synonyms, write_captions
from saywhy.data.synthbirds.config import GENERATOR_VERSION, SynthConfig
from saywhy.data.synthbirds.draw import draw_bird
from saywhy.data.synthbirds.species import SPECIES, Plumage, Species, confusable_pairs, species_templates
from saywhy.data.synthbirds.writer import CUB_PARTS, generate, load_truth

__all__ = [
    "CUB_PARTS",
    "GENERATOR_VERSION",
    "SPECIES",
    "Plumage",
    "Species",
    "SynthConfig",
    "confusable_pairs",
    "draw_bird",
    "generate",
    "load_truth",
    "species_templates",
    "synonyms",
    "write_captions",
]
