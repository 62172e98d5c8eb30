"""Classifier checkpoints: weights in safetensors, everything else in JSON (no pickled code).

A checkpoint folder holds ``model.safetensors`` and ``model.json`` with the
architecture, class list, preprocessing and measured accuracy, so that an explainer
fitted later can check it is explaining the same network.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from saywhy.data.images import Preprocess
from saywhy.errors import SaywhyError
from saywhy.files import atomic_folder
from saywhy.model.smallcnn import SmallCNN


def build_model(arch: str, n_classes: int, **kwargs: Any) -> nn.Module:
    """Instantiate an architecture by name: ``saywhy:smallcnn``, ``torchvision:NAME``, ``timm:NAME``.

    Heavy optional imports happen only for the family asked for.
    """
    family, _, name = arch.partition(":")
    if family == "saywhy" and name == "smallcnn":
        return SmallCNN(n_classes, **kwargs)
    if family == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=n_classes)
    if family == "timm":
        try:
            import timm
        except ImportError:
            raise SaywhyError("timm is not installed: pip install timm") from None
        return timm.create_model(name, pretrained=False, num_classes=n_classes)
    raise SaywhyError(f"unknown architecture {arch!r}: use saywhy:smallcnn, torchvision:NAME or timm:NAME")


def weights_digest(model: nn.Module) -> str:
    """A content hash of the network: its module structure (repr) and its weights.

    The structure matters too: the same tensors in a symmetric-padding and a TF-padding
    EfficientNet give different outputs, so they must not share fitted explainers.
    """
    digest = hashlib.sha256(repr(model).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(folder: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights and metadata atomically: a temp folder renamed into place."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors")
        meta = {**meta, "weights_digest": weights_digest(model)}
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return folder


def load_checkpoint(folder: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint folder and return it (in eval mode) with its metadata."""
    folder = Path(folder)
    meta_path, weights_path = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise SaywhyError(f"{folder} is not a saywhy checkpoint (needs model.json and model.safetensors): run 'saywhy train' first")
    meta = json.loads(meta_path.read_text())
    model = build_model(meta["arch"], len(meta["classes"]), **meta.get("arch_kwargs", {}))
    try:
        model.load_state_dict(load_file(weights_path, device=map_location))
    except RuntimeError as error:
        raise SaywhyError(f"weights in {weights_path} do not fit {meta['arch']}: {str(error).splitlines()[0]}") from None
    return model.eval(), meta


def checkpoint_preprocess(meta: dict[str, Any]) -> Preprocess:
    return Preprocess.from_dict(meta["preprocess"])
