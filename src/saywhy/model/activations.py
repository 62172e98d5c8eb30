"""Run a classifier over images and keep what the paper needs.

For every image: the pooled activations phi(f(x)) (taken as the input of the linear
head, i.e. exactly what the classifier sees) and the logits; the spatial maps f(x) of
the final conv layer only when asked, since they are H*W times larger.

Maps are always (N, C, h, w) with ``maps.mean((2, 3)) == pooled``: a ViT's patch tokens
are laid out on their grid, channels-last maps (Swin) are permuted, and a LayerNorm after pooling (ConvNeXt) is applied to the
maps with the per-image statistics of the pooled vector (see :mod:`saywhy.model.layers`).
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import os
import platform
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from saywhy.data.images import ImageDataset, Preprocess
from saywhy.data.records import ImageRecord
from saywhy.errors import SaywhyError
from saywhy.model.hooks import capture, get_module
from saywhy.model.layers import LayerChoice, token_grid
from saywhy.model.modes import in_training

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class Activations:
    """Per-image network outputs; row i belongs to ``items[index[i]]`` (unreadable images dropped)."""

    pooled: np.ndarray  # (N, n_filters): phi(f_k(x))
    logits: np.ndarray  # (N, n_classes)
    index: np.ndarray  # (N,) positions in the input list
    maps: np.ndarray | None = None  # (N, n_filters, h, w): f_k(x), only with keep_maps
    n_items: int = 0  # how many images were asked for

    @property
    def n_unreadable(self) -> int:
        return int(self.n_items - len(self.index))


def model_device(model: nn.Module) -> torch.device:
    """The device the model lives on; saywhy never moves a model itself."""
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (inputs are cast to it), float32 without any."""
    import torch

    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # --amp choice -> the torch dtype's name
_AMP: contextvars.ContextVar[str | None] = contextvars.ContextVar("saywhy_amp", default=None)
_ALLOCATOR_TUNED = False
# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


@contextlib.contextmanager
def mixed_precision(amp: str | None) -> Iterator[None]:
    """Run every extraction inside the block under CUDA autocast (``"bf16"`` or ``"fp16"``; None: full precision).

    Only CUDA gains from it; on other devices the forward passes stay in the model's dtype. Features
    computed under autocast are cached apart from full-precision ones (:mod:`saywhy.model.feature_cache`).
    """
    if amp is not None and amp not in AMP_DTYPES:
        raise SaywhyError(f"unknown --amp {amp!r}: choose one of {', '.join(AMP_DTYPES)}")
    token = _AMP.set(amp)
    try:
        yield
    finally:
        _AMP.reset(token)


def amp_for(device: torch.device | str) -> str | None:
    """The autocast precision in force for a model on ``device`` (a device or its name; None off CUDA)."""
    return _AMP.get() if device_type(device) == "cuda" else None


def device_type(device: torch.device | str) -> str:
    """``cpu``, ``cuda``, ``mps``...: the kind of a device or of a device name, without importing torch.

    >>> device_type("cuda:1")
    'cuda'
    """
    return getattr(device, "type", None) or str(device).partition(":")[0]


def tune_cpu_allocator() -> bool:
    """Keep the allocator from handing large blocks back to the system after every batch (glibc only, once).

    By default glibc serves blocks over a dynamic threshold with fresh ``mmap`` calls and
    returns freed memory at the top of the heap, so each CPU batch page-faults its activation
    buffers back in: on a 2-core machine, EfficientNet-Lite0 at batch 32 ran at a third of the
    forward-only speed (19 million minor faults for 1,000 images). With blocks under 32 MB on
    the heap, up to 1 GB of free memory kept and 512 MB of headroom per growth, every batch
    reuses the last one's memory (BENCHMARKS.md, "Speed"). Skipped where the user set glibc's
    own malloc variables, and on other C libraries.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" \
            or any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = bool(mallopt(_M_MMAP_THRESHOLD, 32 * 2**20) and mallopt(_M_TRIM_THRESHOLD, 2**30)
                            and mallopt(_M_TOP_PAD, 512 * 2**20))
    return _ALLOCATOR_TUNED


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass: 64 on accelerators; 16 on the CPU, where with the allocator tuned
    batches of 8 to 32 run at the same speed (measured, BENCHMARKS.md) and 16 bounds the memory."""
    return 16 if device.type == "cpu" else 64


def extract_activations(
    model: nn.Module,
    items: Sequence[ImageRecord | str | Path],
    preprocess: Preprocess,
    layers: LayerChoice,
    batch_size: int | None = None,
    keep_maps: bool = False,
    progress: bool = True,
    num_workers: int | None = None,
) -> Activations:
    """Batched forward passes with hooks on the head's input (and the feature layer's output).

    ``batch_size`` defaults to :func:`default_batch_size` for the model's device. Decoding
    overlaps the forward passes: ``num_workers`` DataLoader processes (default: up to 4 on
    CUDA, with pinned memory), else on the CPU one thread that decodes the next batch while
    the network runs, when torch leaves a core free.
    """
    import torch

    device = model_device(model)
    if device.type == "cpu" and len(items) > 1:
        tune_cpu_allocator()
    batch_size = batch_size or default_batch_size(device)
    # only files need decoding (tensors are used as they are, and may live on the GPU already)
    decoding = len(items) > batch_size and all(isinstance(i, (ImageRecord, str, Path)) for i in items)
    if num_workers is None:
        num_workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if device.type == "cuda" and decoding else 0
    if all(isinstance(i, torch.Tensor) for i in items):  # preprocessed already: batched as they are, no loader
        return activations_from_batches(model, _tensor_batches(items, batch_size), layers, keep_maps, progress,
                                        n_items=len(items))
    loader = torch.utils.data.DataLoader(
        ImageDataset(items, preprocess), batch_size=batch_size, num_workers=num_workers,
        pin_memory=device.type == "cuda" and num_workers > 0,
    )
    batches: Iterable = loader
    if num_workers == 0 and decoding and torch.get_num_threads() < (os.cpu_count() or 1):
        batches = prefetched(loader)
    return activations_from_batches(model, batches, layers, keep_maps, progress, n_items=len(items))


def _tensor_batches(items: Sequence[torch.Tensor], batch_size: int) -> Iterator:
    import torch

    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        yield torch.stack(list(chunk)), torch.arange(start, start + len(chunk)), torch.ones(len(chunk), dtype=torch.bool)


def prefetched(batches: Iterable, depth: int = 2) -> Iterator:
    """``batches``, produced by a background thread up to ``depth`` ahead (PIL decodes without the GIL).

    An error in the producer is raised in the consumer; a consumer that stops early stops the producer.
    """
    out: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        out.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            out.put(_Failed(error))
            return
        out.put(done)

    worker = threading.Thread(target=produce, name="saywhy-decode", daemon=True)
    worker.start()
    try:
        while True:
            batch = out.get()
            if batch is done:
                return
            if isinstance(batch, _Failed):
                raise batch.error
            yield batch
    finally:
        stop.set()
        worker.join(timeout=5)


@dataclass
class _Failed:
    error: BaseException


def activations_from_batches(model: nn.Module, batches, layers: LayerChoice, keep_maps: bool = False,
                             progress: bool = False, n_items: int | None = None) -> Activations:
    """The same as :func:`extract_activations` over any iterable of ``(images, index, ok)`` batches."""
    import torch

    device, dtype = model_device(model), model_dtype(model)
    amp = amp_for(device)
    precision = torch.autocast(device.type, dtype=getattr(torch, AMP_DTYPES[amp])) if amp else contextlib.nullcontext()
    if in_training(model):  # cheaper than eval()'s walk when it is in eval mode already
        model.eval()
    pooled, logits, maps, kept = [], [], [], []
    outputs = [layers.feature_layer] if keep_maps else []
    with capture(model, outputs=outputs, inputs=[layers.head]) as seen, torch.inference_mode(), precision:
        for images, index, ok in (tqdm(batches, desc="activations", leave=False) if progress else batches):
            if not ok.any():
                continue
            batch = images if bool(ok.all()) else images[ok]
            out = model(batch.to(device=device, dtype=dtype, non_blocking=True))
            logits.append(out.float().cpu().numpy())
            pooled.append(seen[f"in:{layers.head}"].flatten(1).float().cpu().numpy())
            if keep_maps:
                maps.append(feature_maps(model, seen[f"out:{layers.feature_layer}"], layers).float().cpu().numpy())
            kept.append(np.asarray(index)[np.asarray(ok)])
    n_filters, n_classes = layers.n_filters, layers.n_classes
    result = Activations(
        pooled=_joined(pooled, (0, n_filters), np.float32),
        logits=_joined(logits, (0, n_classes), np.float32),
        index=_joined(kept, (0,), int),
        maps=_joined(maps, None, np.float32),
    )
    result.n_items = n_items if n_items is not None else len(result.index)
    return result


def _joined(blocks: list[np.ndarray], empty: tuple[int, ...] | None, dtype: type) -> np.ndarray | None:
    """The batches' arrays end to end; one batch's array as it is: no copy of its maps (8 MB for 32 demo
    images), which view the forward pass's own output, read after the pass is over, as a copy would be."""
    if not blocks:
        return None if empty is None else np.zeros(empty, dtype)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def feature_maps(model: nn.Module, output: torch.Tensor, layers: LayerChoice) -> torch.Tensor:
    """The (N, C, h, w) maps whose spatial mean is the head's input, from the feature layer's output.

    Channels-last outputs (N, h, w, C) are permuted; token outputs (N, L, C) lose their
    ``prefix_tokens`` and are laid out on the patch grid;
    with ``layers.norm`` each map becomes gamma_k (f_k - mean(p)) / std(p) + beta_k, p being
    the image's pooled vector, whose mean is exactly LayerNorm(p).
    """
    x = output
    if layers.channels_last:
        x = x.permute(0, 3, 1, 2)
    if layers.prefix_tokens is not None:
        if x.dim() != 3:
            raise SaywhyError(f"layer {layers.feature_layer!r} outputs {tuple(x.shape[1:])}, not (tokens, channels)")
        x = x[:, layers.prefix_tokens:]
        grid = layers.grid if layers.grid and layers.grid[0] * layers.grid[1] == x.shape[1] else token_grid(model, x.shape[1])
        if grid is None:
            raise SaywhyError(f"{x.shape[1]} patch tokens of {layers.feature_layer!r} do not form a grid: use square images")
        x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid)
    if layers.norm is not None:
        norm = get_module(model, layers.norm)
        pooled = x.double().mean((2, 3))
        mean = pooled.mean(1)[:, None, None, None]
        scale = (pooled.var(1, unbiased=False) + norm.eps).rsqrt()[:, None, None, None]
        y = (x.double() - mean) * scale
        if getattr(norm, "weight", None) is not None:
            y = y * norm.weight.detach().double()[None, :, None, None]
        if getattr(norm, "bias", None) is not None:
            y = y + norm.bias.detach().double()[None, :, None, None]
        x = y.to(output.dtype)
    return x
