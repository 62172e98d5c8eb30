"""Where saywhy keeps generated data, trained models and fitted explainers.

Everything lives under one home folder (``$SAYWHY_HOME``, default ``./.saywhy``), in
sub-folders named by content fingerprints, so a changed config never reuses a stale
artifact and an unchanged one is never recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def default_home() -> Path:
    return Path(os.environ.get("SAYWHY_HOME", ".saywhy")).expanduser()


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Workspace:
    home: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser())

    @classmethod
    def default(cls) -> Workspace:
        return cls(default_home())

    def synthbirds(self, config_fingerprint: str) -> Path:
        return self.home / "data" / f"synthbirds-{config_fingerprint}"

    def model(self, key: str) -> Path:
        return self.home / "models" / key

    def explainer(self, key: str) -> Path:
        return self.home / "explainers" / key

    @property
    def phrase_cache(self) -> Path:
        return self.home / "cache" / "phrases"

    @property
    def feature_cache(self) -> Path:
        return self.home / "cache" / "features"

    @property
    def last_explainer(self) -> Path:
        """A small pointer file naming the explainer that the last fit or demo wrote."""
        return self.home / "last_explainer.txt"

    def remember_explainer(self, folder: str | Path) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.last_explainer.with_suffix(".tmp")
        tmp.write_text(str(Path(folder).resolve()))
        os.replace(tmp, self.last_explainer)

    def recall_explainer(self) -> Path | None:
        if self.last_explainer.is_file():
            return Path(self.last_explainer.read_text().strip())
        return None
