"""What a synthbirds dataset is generated from; its fingerprint names it in caches."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from saywhy.data.synthbirds.species import SPECIES
from saywhy.errors import SaywhyError

# Bump whenever a change to species, drawing or captions changes the output, so a
# cached dataset from older code is never mistaken for a current one.
GENERATOR_VERSION = "1"


@dataclass(frozen=True)
class SynthConfig:
    """Settings of one synthbirds dataset.

    ``label_noise`` is the share of images whose class label is flipped to another
    class (CUB has about 4% wrong labels); ``caption_noise`` the share of captions
    with a vague phrase or a wrong colour. ``n_species`` takes the first species of
    ``SPECIES``; 20 or more keep all eight confusable pairs.

    >>> SynthConfig(n_images=60, image_size=64).fingerprint() == SynthConfig(n_images=60, image_size=64).fingerprint()
    True
    """

    n_images: int = 3000
    image_size: int = 128
    seed: int = 0
    n_species: int = 24
    train_fraction: float = 0.8
    label_noise: float = 0.0
    caption_noise: float = 0.05
    captions_per_image: int = 10

    def __post_init__(self) -> None:
        checks = [
            (self.n_images >= 1, "n_images must be at least 1"),
            (self.image_size >= 32, "image_size must be at least 32 px"),
            (2 <= self.n_species <= len(SPECIES), f"n_species must be between 2 and {len(SPECIES)}"),
            (0.0 < self.train_fraction <= 1.0, "train_fraction must be in (0, 1]"),
            (0.0 <= self.label_noise < 1.0, "label_noise must be in [0, 1)"),
            (0.0 <= self.caption_noise <= 1.0, "caption_noise must be in [0, 1]"),
            (self.captions_per_image >= 1, "captions_per_image must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise SaywhyError(f"invalid synthbirds config: {message}")

    def fingerprint(self) -> str:
        """A short stable hash of these settings and the generator version, for cache keys."""
        payload = json.dumps({"generator_version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
