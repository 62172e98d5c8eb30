"""Run a classifier over images and keep what the paper needs.

For every image: the pooled activations phi(f(x)) (taken as the input of the linear
head, i.e. exactly what the classifier sees) and the logits; the spatial maps f(x) of
the final conv layer only when asked, since they are H*W times larger.
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
from saywhy.model.hooks import capture
from saywhy.model.layers import LayerChoice


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
    device = model_device(model)
    model.eval()
    pooled, logits, maps, kept = [], [], [], []
    outputs = [layers.feature_layer] if keep_maps else []
    with capture(model, outputs=outputs, inputs=[layers.head]) as seen, torch.no_grad():
        for images, index, ok in tqdm(batches, desc="activations", disable=not progress, leave=False):
            if not ok.any():
                continue
            out = model(images[ok].to(device))
            logits.append(out.float().cpu().numpy())
            pooled.append(seen[f"in:{layers.head}"].flatten(1).float().cpu().numpy())
            if keep_maps:
                maps.append(seen[f"out:{layers.feature_layer}"].float().cpu().numpy())
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
