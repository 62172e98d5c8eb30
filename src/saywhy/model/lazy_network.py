"""A checkpoint's network, built only when a forward pass needs it.

Explaining an image whose pooled features are in the feature cache needs no network: the
features and the explainer's copy of the head give the explanation. What a session checks
of the network (its weights are the explainer's, they are finite, the feature cache's key,
the layers) is then checked against what the explainer recorded at fit
(:class:`NetworkRecord`), which holds because of one fact: the same bytes of
``model.safetensors``, rebuilt from the same recipe (architecture, its arguments, the class
count, the software's versions, :func:`saywhy.model.checkpoint.build_recipe`), give the same
module bit for bit, so the same weights digest, backbone digest and layer choice. The
folder matches the record when its ``model.json`` gives that recipe (and that weights
digest) and its weights file has that SHA-256; anything else is loaded and checked as
before, so a checkpoint changed in any way gets exactly the old verdict.

The network is built (timm, torchvision) the first time it is asked for
(:attr:`LazyNetwork.module`), loaded with every check of
:func:`~saywhy.model.checkpoint.load_checkpoint`, and refused unless its weights digest is
the recorded one.

>>> record = NetworkRecord.from_metadata(explainer.metadata_)                 # doctest: +SKIP
>>> network = open_network("models/birds", record)  # reads model.json, hashes the weights file  # doctest: +SKIP
>>> network.built                                                              # doctest: +SKIP
False
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saywhy.errors import SaywhyError
from saywhy.model.activations import device_type
from saywhy.model.checkpoint import (
    build_recipe,
    checkpoint_identity,
    load_checkpoint,
    read_checkpoint_meta,
)
from saywhy.model.layers import LayerChoice

if TYPE_CHECKING:
    import torch
    from torch import nn

RECORD_VERSION = 1
RECORD_KEY = "network"  # the explainer metadata's field


@dataclass(frozen=True)
class NetworkRecord:
    """What an explainer records at fit of the checkpoint network it was fitted on.

    ``checkpoint``: :func:`~saywhy.model.checkpoint.checkpoint_identity` (recipe, SHA-256 of
    the weights file, weights digest). ``layers``: the choice a session makes for the
    explainer's layer and head at ``probe_size`` px on a ``probe_device`` (what
    :func:`saywhy.pipeline.resolve_layers` returns). ``backbone_digest``: the feature cache's
    digest of the network without that head.
    """

    checkpoint: dict[str, Any]
    layers: LayerChoice
    probe_size: int
    probe_device: str
    backbone_digest: str

    def to_dict(self) -> dict[str, Any]:
        layers = dataclasses.asdict(self.layers)
        return {"version": RECORD_VERSION, "checkpoint": dict(self.checkpoint), "layers": layers,
                "probe_size": self.probe_size, "probe_device": self.probe_device,
                "backbone_digest": self.backbone_digest}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> NetworkRecord | None:
        """The record in an explainer's metadata; None when there is none (written before) or of another version."""
        data = metadata.get(RECORD_KEY)
        if not isinstance(data, Mapping) or data.get("version") != RECORD_VERSION:
            return None
        try:
            layers = dict(data["layers"])
            if layers.get("grid") is not None:
                layers["grid"] = tuple(layers["grid"])
            checkpoint = dict(data["checkpoint"])
            if not {"recipe", "file_sha256", "weights_digest"} <= set(checkpoint):
                return None
            return cls(checkpoint, LayerChoice(**layers), int(data["probe_size"]), str(data["probe_device"]),
                       str(data["backbone_digest"]))
        except (KeyError, TypeError, ValueError):
            return None

    def usable(self, metadata: Mapping[str, Any], probe_size: int, device: torch.device | str) -> bool:
        """Whether a session over ``metadata``'s explainer, probing at ``probe_size`` on ``device``, would find these layers."""
        return (metadata.get("weights_digest") == self.checkpoint["weights_digest"]
                and metadata.get("layer") == self.layers.feature_layer and metadata.get("head") == self.layers.head
                and probe_size == self.probe_size and device_type(device) == self.probe_device)


def network_record(model: nn.Module, layers: LayerChoice, probe_size: int, backbone_digest: str) -> NetworkRecord | None:
    """The record of ``model`` for an explainer's metadata; None unless it came, unchanged, from a checkpoint."""
    identity = checkpoint_identity(model)
    if identity is None:
        return None
    device = next(model.parameters()).device.type
    return NetworkRecord(identity, layers, int(probe_size), device, backbone_digest)


class LazyNetwork:
    """The network of a checkpoint folder known to match a :class:`NetworkRecord`, built on first use.

    ``module`` builds it (once) on ``device``; ``built`` says whether that happened.
    """

    def __init__(self, folder: str | Path, record: NetworkRecord, device: Any = "cpu"):
        # the device's name ("cpu", "cuda:0"): torch takes it wherever it takes a device, and keeping
        # a name means a network that is never built never imports torch
        self.folder, self.record, self.device = Path(folder), record, str(device)
        self._module: nn.Module | None = None

    @property
    def built(self) -> bool:
        return self._module is not None

    @property
    def module(self) -> nn.Module:
        """The network, built and checked now if it was not yet (every check of ``load_checkpoint``)."""
        if self._module is None:
            model, _ = load_checkpoint(self.folder, map_location=self.device)
            identity = checkpoint_identity(model)
            if identity is None or identity["weights_digest"] != self.record.checkpoint["weights_digest"]:
                raise SaywhyError(f"{self.folder} changed after it was opened: its weights are no longer those the "
                                  "explainer was fitted on; open it again, or refit the explainer ('saywhy fit')")
            self._module = model
        return self._module

    def recorded_backbone_digest(self, head: str) -> str | None:
        """The feature cache's backbone digest without ``head``, if it is the recorded head's."""
        return self.record.backbone_digest if head == self.record.layers.head else None

    def __repr__(self) -> str:
        return f"LazyNetwork({str(self.folder)!r}, built={self.built}, device={str(self.device)!r})"


def module_of(model: nn.Module | LazyNetwork) -> nn.Module:
    """The module itself (a lazy network is built now)."""
    return model.module if isinstance(model, LazyNetwork) else model


def matches(folder: str | Path, record: NetworkRecord) -> bool:
    """Whether ``folder`` holds the checkpoint of ``record``: the same recipe, weights digest and weights-file bytes.

    A folder that cannot be read raises the one-line error :func:`load_checkpoint` would.
    """
    meta, _, weights_path = read_checkpoint_meta(folder)
    expected = record.checkpoint
    if meta.get("weights_digest") not in (None, "", expected["weights_digest"]):
        return False
    if build_recipe(meta) != expected["recipe"]:
        return False
    digest = hashlib.sha256()
    try:
        with open(weights_path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    except OSError:
        return False  # load_checkpoint says why
    return digest.hexdigest() == expected["file_sha256"]


def open_network(folder: str | Path, record: NetworkRecord | None, device: Any = "cpu") -> nn.Module | LazyNetwork:
    """The network of a checkpoint folder: lazy when it matches ``record``, else loaded and checked now."""
    if record is not None and matches(folder, record):
        return LazyNetwork(folder, record, device)
    return load_checkpoint(folder, map_location=device)[0]
