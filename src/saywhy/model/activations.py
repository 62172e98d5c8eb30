"""Run a classifier over images and keep what the paper needs.

For every image: the pooled activations phi(f(x)) (taken as the input of the linear
head, i.e. exactly what the classifier sees) and the logits; the spatial maps f(x) of
the final conv layer only when asked, since they are H*W times larger.

Maps are always (N, C, h, w) with ``maps.mean((2, 3)) == pooled``: a ViT's patch tokens
are laid out on their grid, channels-last maps (Swin) are permuted, and a LayerNorm after pooling (ConvNeXt) is applied to the
maps with the per-image statistics of the pooled vector (see :mod:`saywhy.model.layers`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from saywhy.data.images import ImageDataset, Preprocess
from saywhy.data.records import ImageRecord
from saywhy.errors import SaywhyError
from saywhy.model.hooks import capture, get_module
from saywhy.model.layers import LayerChoice, token_grid


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
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (inputs are cast to it), float32 without any."""
    floating = [p.dtype for p in model.parameters() if p.is_floating_point()]
    return floating[0] if floating else torch.float32


def extract_activations(
    model: nn.Module,
    items: Sequence[ImageRecord | str | Path],
    preprocess: Preprocess,
    layers: LayerChoice,
    batch_size: int = 64,
    keep_maps: bool = False,
    progress: bool = True,
    num_workers: int = 0,
) -> Activations:
    """Batched forward passes with hooks on the head's input (and the feature layer's output)."""
    loader = torch.utils.data.DataLoader(
        ImageDataset(items, preprocess), batch_size=batch_size, num_workers=num_workers
    )
    return activations_from_batches(model, loader, layers, keep_maps, progress, n_items=len(items))


def activations_from_batches(model: nn.Module, batches, layers: LayerChoice, keep_maps: bool = False,
                             progress: bool = False, n_items: int | None = None) -> Activations:
    """The same as :func:`extract_activations` over any iterable of ``(images, index, ok)`` batches."""
    device, dtype = model_device(model), model_dtype(model)
    model.eval()
    pooled, logits, maps, kept = [], [], [], []
    outputs = [layers.feature_layer] if keep_maps else []
    with capture(model, outputs=outputs, inputs=[layers.head]) as seen, torch.no_grad():
        for images, index, ok in tqdm(batches, desc="activations", disable=not progress, leave=False):
            if not ok.any():
                continue
            out = model(images[ok].to(device=device, dtype=dtype))
            logits.append(out.float().cpu().numpy())
            pooled.append(seen[f"in:{layers.head}"].flatten(1).float().cpu().numpy())
            if keep_maps:
                maps.append(feature_maps(model, seen[f"out:{layers.feature_layer}"], layers).float().cpu().numpy())
            kept.append(np.asarray(index)[np.asarray(ok)])
    n_filters, n_classes = layers.n_filters, layers.n_classes
    result = Activations(
        pooled=np.concatenate(pooled) if pooled else np.zeros((0, n_filters), np.float32),
        logits=np.concatenate(logits) if logits else np.zeros((0, n_classes), np.float32),
        index=np.concatenate(kept) if kept else np.zeros(0, int),
        maps=np.concatenate(maps) if maps else None,
    )
    result.n_items = n_items if n_items is not None else len(result.index)
    return result


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
