"""Classifier checkpoints: weights in safetensors, everything else in JSON (no pickled code).

A checkpoint folder holds ``model.safetensors`` and ``model.json`` with the
architecture, class list, preprocessing and measured accuracy, so that an explainer
fitted later can check it is explaining the same network. ``checkpoint_metadata`` is the
one place that metadata is built; ``import_checkpoint`` turns a network trained elsewhere
(a torchvision/timm name plus a state dict, or a live module) into such a folder.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saywhy.data.images import Preprocess
from saywhy.errors import SaywhyError
from saywhy.files import atomic_folder

if TYPE_CHECKING:  # torch is imported where a network is built, saved or checked, not to read a checkpoint's metadata
    import torch
    from torch import nn


def build_model(arch: str, n_classes: int, **kwargs: Any) -> nn.Module:
    """Instantiate an architecture by name: ``saywhy:smallcnn``, ``torchvision:NAME``, ``timm:NAME``.

    ``kwargs`` go to the constructor (``SmallCNN``, ``torchvision.models.get_model``,
    ``timm.create_model``), e.g. ``img_size=32, global_pool="avg"`` for a timm ViT. Heavy
    optional imports happen only for the family asked for.
    """
    family, _, name = arch.partition(":")
    try:
        if family == "saywhy" and name == "smallcnn":
            from saywhy.model.smallcnn import SmallCNN

            return SmallCNN(n_classes, **kwargs)
        if family == "torchvision" and name:
            import torchvision

            if name not in torchvision.models.list_models():
                raise SaywhyError(f"torchvision has no model {name!r}: see torchvision.models.list_models()")
            return torchvision.models.get_model(name, weights=None, num_classes=n_classes, **kwargs)
        if family == "timm" and name:
            try:
                import timm
            except ImportError:
                raise SaywhyError("timm is not installed: pip install timm") from None
            if ":" not in name and not timm.is_model(name):  # hf-hub:ORG/NAME is resolved by timm itself
                raise SaywhyError(f"timm has no model {name!r}: see timm.list_models()")
            return timm.create_model(name, pretrained=False, num_classes=n_classes, **kwargs)
    except (TypeError, ValueError, AssertionError) as error:
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        raise SaywhyError(f"cannot build {arch} with arch_kwargs {kwargs} ({detail}): check the architecture's options") from None
    raise SaywhyError(f"unknown architecture {arch!r}: use saywhy:smallcnn, torchvision:NAME or timm:NAME")


def checkpoint_metadata(
    arch: str,
    classes: Sequence[str],
    preprocess: Preprocess | Mapping[str, Any],
    arch_kwargs: Mapping[str, Any] | None = None,
    class_ids: Sequence[int] | None = None,
    dataset: str | Path | None = None,
    dataset_fingerprint: str | None = None,
    **report: Any,
) -> dict[str, Any]:
    """The ``model.json`` of a checkpoint, built and checked in one place.

    ``arch`` and ``arch_kwargs`` rebuild the network (:func:`build_model`); ``classes``
    name its outputs in order; ``preprocess`` is the input it expects (size, mean/std,
    crop). ``report`` holds whatever else describes how it was made (accuracy, timings).
    Optional fields left as None are not written. ``save_checkpoint`` adds ``weights_digest``.

    >>> meta = checkpoint_metadata("saywhy:smallcnn", ["a", "b"], Preprocess(64), {"pools": 2}, test_accuracy=0.5)
    >>> meta["arch_kwargs"], meta["classes"], meta["preprocess"]["image_size"], meta["test_accuracy"]
    ({'pools': 2}, ['a', 'b'], 64, 0.5)
    """
    if not isinstance(arch, str) or ":" not in arch:
        raise SaywhyError(f"architecture {arch!r} is not FAMILY:NAME: use saywhy:smallcnn, torchvision:NAME or timm:NAME")
    names = [str(c) for c in classes]
    if not names:
        raise SaywhyError("a checkpoint needs at least one class name")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise SaywhyError(f"class names must be unique; repeated: {', '.join(repeated[:5])}")
    if class_ids is not None and len(class_ids) != len(names):
        raise SaywhyError(f"{len(class_ids)} class ids for {len(names)} classes: give one id per class")
    if not isinstance(preprocess, Preprocess):
        preprocess = _preprocess(preprocess, "preprocess")
    meta: dict[str, Any] = {"arch": arch, "arch_kwargs": dict(arch_kwargs or {}), "classes": names,
                            "preprocess": preprocess.to_dict()}
    optional = {"class_ids": [int(c) for c in class_ids] if class_ids is not None else None,
                "dataset": str(dataset) if dataset is not None else None, "dataset_fingerprint": dataset_fingerprint}
    meta.update({k: v for k, v in optional.items() if v is not None})
    meta.update(report)
    try:
        return json.loads(json.dumps(meta))
    except (TypeError, ValueError) as error:
        raise SaywhyError(f"checkpoint metadata must be plain JSON values: {error}") from None


def weights_digest(model: nn.Module) -> str:
    """A content hash of the network: its module structure (repr) and its weights.

    The structure matters too: the same tensors in a symmetric-padding and a TF-padding
    EfficientNet give different outputs, so they must not share fitted explainers. Computed
    once per model object while its weights stay the same (:mod:`saywhy.model.memo`), so
    loading, fitting and every session over one network hash it once.
    """
    from saywhy.model.memo import memoized

    return memoized(model, "weights_digest", lambda: _weights_digest(model))


def _weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256(repr(model).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(folder: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights and metadata atomically: a temp folder renamed into place."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_folder(folder, "checkpoint") as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors")
        meta = {**meta, "weights_digest": weights_digest(model)}
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return folder


def load_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint folder and return it (in eval mode, on ``map_location``) with its metadata.

    Every way a folder can be wrong (missing files, bad JSON, missing fields, weights that
    do not fit the architecture, NaN weights, tensors that no longer match the digest saved
    with them) is one ``SaywhyError`` line naming the file. The network remembers where it
    came from (:func:`checkpoint_identity`), so that an explainer fitted on it can later
    recognize the folder without building the network (:mod:`saywhy.model.lazy_network`).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    meta, meta_path, weights_path = read_checkpoint_meta(folder)
    model = build_model(meta["arch"], len(meta["classes"]), **meta.get("arch_kwargs", {}))
    try:
        data = weights_path.read_bytes()  # hashed as read, then parsed from memory: one read
        file_sha256 = hashlib.sha256(data).hexdigest()
        state = load(data)  # checked and digested on the CPU, then moved
    except (SafetensorError, OSError, RuntimeError) as error:
        raise SaywhyError(f"cannot read {weights_path} ({type(error).__name__}): the checkpoint is damaged, write it again") from None
    del data
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if bad:
        raise SaywhyError(f"{weights_path} holds NaN or infinite weights ({len(bad)} tensors, e.g. {bad[0]}): "
                          "the checkpoint is damaged or its training diverged; train or import it again")
    load_weights(model, state, str(weights_path), f"{meta['arch']} with {len(meta['classes'])} classes")
    digest = weights_digest(model)
    if meta.get("weights_digest") and digest != meta["weights_digest"]:
        raise SaywhyError(f"{weights_path} does not match the weights digest in {meta_path.name} (damaged or edited "
                          "after saving): train or import the checkpoint again")
    if torch.device(map_location).type != "cpu":
        model.to(map_location)
    model.eval()
    from saywhy.model.memo import remember

    remember(model, "checkpoint_identity", {"recipe": build_recipe(meta), "file_sha256": file_sha256,
                                            "weights_digest": digest})
    return model, meta


def read_checkpoint_meta(folder: str | Path) -> tuple[dict[str, Any], Path, Path]:
    """``model.json`` of a checkpoint folder, checked as :func:`load_checkpoint` checks it, and the two files' paths."""
    folder = Path(folder)
    meta_path, weights_path = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise SaywhyError(f"{folder} is not a saywhy checkpoint (needs model.json and model.safetensors): run 'saywhy train' first")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise SaywhyError(f"{meta_path} is not valid JSON ({error.msg}, line {error.lineno}): the checkpoint is damaged, "
                          "write it again") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SaywhyError(f"cannot read {meta_path} ({type(error).__name__}): the checkpoint is damaged, write it again") from None
    missing = [k for k in ("arch", "classes", "preprocess") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise SaywhyError(f"{meta_path} lacks {', '.join(missing)}: it is not the metadata of a saywhy checkpoint")
    if not isinstance(meta["classes"], list) or not meta["classes"]:
        raise SaywhyError(f"{meta_path}: 'classes' must be a non-empty list of class names")
    _preprocess(meta["preprocess"], str(meta_path))
    return meta, meta_path, weights_path


def build_recipe(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`build_model` makes of a checkpoint's metadata depends on, software included.

    The same recipe builds the same module structure, so with the same tensors it has the
    same :func:`weights_digest`: the architecture, its constructor's arguments, the class
    count, and the versions of torch and of the family's library (for ``saywhy:`` models, a
    hash of the module that defines them). Reading a version does not import the library.
    """
    family = str(meta["arch"]).partition(":")[0]
    software = {"torch": torch_version()}
    if family in ("timm", "torchvision"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            software[family] = version(family)
        except PackageNotFoundError:
            software[family] = None
    elif family == "saywhy":
        source = importlib.util.find_spec("saywhy.model.smallcnn").origin  # found, not imported (it imports torch)
        software["saywhy.model.smallcnn"] = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]
    return json.loads(json.dumps({"arch": meta["arch"], "arch_kwargs": meta.get("arch_kwargs", {}),
                                  "n_classes": len(meta["classes"]), "software": software}))


def torch_version() -> str:
    """``torch.__version__``, read from torch's ``version.py`` while torch is not imported (importing it costs a second).

    >>> import torch; torch_version() == torch.__version__
    True
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    spec = importlib.util.find_spec("torch")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        try:
            text = (Path(folder) / "version.py").read_text(encoding="utf-8")
        except OSError:
            continue
        match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        if match:
            return match.group(1)
    import torch

    return str(torch.__version__)


def checkpoint_identity(model: nn.Module) -> dict[str, Any] | None:
    """Where ``model`` came from, if :func:`load_checkpoint` built it and it has not changed since.

    ``{"recipe": build_recipe(meta), "file_sha256": SHA-256 of model.safetensors, "weights_digest": ...}``.
    Those bytes, rebuilt from that recipe, give this network again, bit for bit; None for a
    network made or changed any other way.
    """
    from saywhy.model.memo import recall

    identity = recall(model, "checkpoint_identity")
    return dict(identity) if isinstance(identity, dict) else None


def checkpoint_preprocess(meta: dict[str, Any]) -> Preprocess:
    return _preprocess(meta["preprocess"], "the checkpoint's preprocess")


def _preprocess(data: Mapping[str, Any], where: str) -> Preprocess:
    try:
        return Preprocess.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise SaywhyError(f"{where}: preprocessing needs image_size, mean and std (3 values each) ({type(error).__name__}: "
                          f"{error})") from None
    except SaywhyError as error:  # the values are there but invalid (Preprocess checks them)
        raise SaywhyError(f"{where}: {error}") from None


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, target: str) -> None:
    """Load a state dict strictly, or raise one line naming ``source`` and the first tensors that do not fit.

    BatchNorm's step counters (``num_batches_tracked``) may be absent; a ``module.`` prefix
    (DataParallel) is dropped.
    """
    from torch import nn

    expected = model.state_dict()
    state = dict(state)
    if state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in expected):
        state = {k[len("module."):]: v for k, v in state.items()}
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        modules = dict(model.named_modules())
        for key in wrong:
            owner = modules.get(key.rpartition(".")[0])
            if isinstance(owner, nn.Linear) and key.endswith(".weight") and state[key].dim() == 2 \
                    and state[key].shape[1] == owner.in_features:
                raise SaywhyError(f"{source}: the head {key.rpartition('.')[0]} has {state[key].shape[0]} outputs but "
                                  f"{target} has {owner.out_features}: give one class name per output of the head")
        shapes = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:3])
        more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        raise SaywhyError(f"{source} does not fit {target}: tensor shapes differ ({shapes}{more}): they belong to another "
                          "architecture or arch_kwargs")
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
        raise SaywhyError(f"{source} does not fit {target}: {'; '.join(parts)}: they belong to another architecture")
    merged = {**{k: v for k, v in expected.items() if k not in state}, **state}
    try:
        model.load_state_dict(merged, strict=True)
    except RuntimeError as error:
        raise SaywhyError(f"{source} does not fit {target}: {' '.join(str(error).split())[:240]}") from None


def import_checkpoint(
    out: str | Path,
    *,
    arch: str | None = None,
    weights: str | Path | None = None,
    model: nn.Module | None = None,
    classes: Sequence[str],
    preprocess: Preprocess | Mapping[str, Any],
    arch_kwargs: Mapping[str, Any] | None = None,
    **report: Any,
) -> Path:
    """Turn a network trained elsewhere into a saywhy checkpoint folder; returns ``out``.

    Give ``arch`` (``torchvision:NAME``, ``timm:NAME``, ``saywhy:smallcnn``) with
    ``arch_kwargs`` (what the constructor took besides the class count), and either
    ``weights``, a state-dict file (``.pth``/``.pt`` read with ``weights_only=True``, or
    ``.safetensors``), or ``model``, the live module. The network is rebuilt from ``arch``,
    the weights loaded strictly, a live module's logits compared with the rebuilt one's, and
    the exactness check of :func:`saywhy.model.layers.find_layers` run at
    ``preprocess.image_size``; only then is the folder written (atomically). ``classes``
    name the head's outputs in order; ``report`` adds fields to ``model.json``.

    >>> import_checkpoint("models/birds", arch="torchvision:resnet50", weights="resnet50_cub.pth",
    ...                   classes=names, preprocess=Preprocess(224, IMAGENET_MEAN, IMAGENET_STD))  # doctest: +SKIP
    PosixPath('models/birds')
    """
    import torch

    from saywhy.model.layers import find_layers, probe_batch
    from saywhy.model.pretrained import read_state_dict

    if (weights is None) == (model is None):
        raise SaywhyError("import a network from weights=PATH (a state dict file) or model=MODULE (a live network), "
                          "exactly one of them")
    if arch is None:
        what = f"a {type(model).__name__} module" if model is not None else f"weights {weights}"
        raise SaywhyError(f"importing {what} needs arch='torchvision:NAME', 'timm:NAME' or 'saywhy:smallcnn' (and its "
                          "arch_kwargs), so that load_checkpoint can rebuild the network")
    kwargs = dict(arch_kwargs or {})
    meta = checkpoint_metadata(arch, classes, preprocess, kwargs, **report)
    preprocess = _preprocess(meta["preprocess"], "preprocess")
    n_classes = len(meta["classes"])
    target = f"{arch} with {n_classes} classes" + (f" and arch_kwargs {kwargs}" if kwargs else "")
    rebuilt = build_model(arch, n_classes, **kwargs).eval()
    if model is not None:
        if type(model) is not type(rebuilt):
            raise SaywhyError(f"the model is a {type(model).__qualname__} but {arch} builds a {type(rebuilt).__qualname__}: "
                              "saywhy imports only networks that build_model rebuilds (torchvision:NAME, timm:NAME, "
                              "saywhy:smallcnn); a custom class must be one of those, or be rewritten as one")
        source = f"the {type(model).__name__} module"
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    else:
        source = str(weights)
        state = read_state_dict(weights)
    load_weights(rebuilt, state, source, target)
    example = torch.zeros(1, 3, preprocess.image_size, preprocess.image_size)
    if model is not None:
        _same_logits(model, rebuilt, probe_batch(example), target)
    layers = find_layers(rebuilt, example)
    meta["imported"] = {"from": source if weights is not None else "python module", "feature_layer": layers.feature_layer,
                        "head": layers.head, "max_error": layers.max_error}
    return save_checkpoint(out, rebuilt, meta)


def _same_logits(model: nn.Module, rebuilt: nn.Module, x: torch.Tensor, target: str) -> None:
    """A live module and its rebuilt copy must agree: same tensors in another structure (pooling, padding) would not.

    Both run on the module's device and dtype (a copy of the rebuilt network goes there), so
    TF32 or half-precision kernels round both alike; the module itself is not moved.
    """
    import torch

    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    twin = copy.deepcopy(rebuilt).to(device=device, dtype=dtype).eval()
    was_training = model.training
    try:
        with torch.no_grad():
            x = x.to(device=device, dtype=dtype)
            given, again = model.eval()(x).detach().double(), twin(x).double()
    finally:
        model.train(was_training)
    tolerance = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4
    error = float((given - again).abs().max() / given.abs().max().clamp_min(1e-12)) if given.shape == again.shape else 1.0
    if error > tolerance:
        raise SaywhyError(f"the network rebuilt as {target} computes other logits than the module given (relative "
                          f"difference {error:.2g}): pass the arch_kwargs the module was built with")
