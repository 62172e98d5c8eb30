"""Find the final convolutional layer and the linear head of a classifier.

The paper needs the feature maps f(x) fed to global pooling and the weight matrix W
of the one fully connected layer after it. By default both are found by running one
forward pass and watching which modules fire, so torchvision, timm and custom models
work without configuration; when that fails the error names what was found.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from saywhy.errors import SaywhyError
from saywhy.model.hooks import get_module


@dataclass(frozen=True)
class LayerChoice:
    """The layer whose output maps are f(x) and the linear head whose input is phi(f(x))."""

    feature_layer: str
    head: str
    n_filters: int
    n_classes: int


def find_layers(
    model: nn.Module,
    example: torch.Tensor,
    feature_layer: str | None = None,
    head: str | None = None,
) -> LayerChoice:
    """Pick the final conv layer and the linear head, by name or automatically.

    Automatic choice: the head is the last ``nn.Linear`` that runs; the feature layer is
    the last module that runs and outputs a 4-D map with as many channels as the head
    has inputs (so a post-activation block output beats the bare conv before it), not
    counting the 1x1 output of global pooling itself.
    """
    order: list[tuple[str, nn.Module, torch.Size]] = []
    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(_recorder(order, name)))
        with torch.no_grad():
            model.eval()
            model(example)
    finally:
        for handle in handles:
            handle.remove()

    linears = [(n, m) for n, m, _ in order if isinstance(m, nn.Linear)]
    if head is None:
        if not linears:
            raise SaywhyError(
                "model has no linear head (nn.Linear) after global pooling; saywhy needs a "
                "global-pooling + linear classifier: pass --head NAME if the head is another module type"
            )
        head = linears[-1][0]
    head_module = get_module(model, head)
    if not isinstance(head_module, nn.Linear):
        raise SaywhyError(f"head {head!r} is a {type(head_module).__name__}, not nn.Linear: pass --head with a linear layer")
    n_filters = head_module.in_features

    maps = [(n, shape) for n, _, shape in order if len(shape) == 4]
    if feature_layer is None:
        matching = [n for n, shape in maps if shape[1] == n_filters]
        # The global-pooling output is 4-D too (N, C, 1, 1): prefer a real spatial map.
        spatial = [n for n, shape in maps if shape[1] == n_filters and shape[2] * shape[3] > 1]
        matching = spatial or matching
        if not matching:
            found = ", ".join(f"{n} {tuple(s[1:])}" for n, s in maps[-6:]) or "no layer with a 4-D output"
            raise SaywhyError(
                f"no convolutional layer outputs {n_filters} channels for head {head!r} (found: {found}); "
                "pass --layer NAME with the final conv layer"
            )
        feature_layer = matching[-1]
    else:
        get_module(model, feature_layer)
        shape = next((s for n, s in maps if n == feature_layer), None)
        if shape is None or shape[1] != n_filters:
            raise SaywhyError(
                f"layer {feature_layer!r} outputs {tuple(shape) if shape else 'no 4-D map'}, but head {head!r} "
                f"takes {n_filters} features: pass --layer with the map that is pooled into the head"
            )
    return LayerChoice(feature_layer, head, n_filters, head_module.out_features)


def _recorder(order: list, name: str):
    def hook(module: nn.Module, args: tuple, result) -> None:
        if isinstance(result, torch.Tensor):
            order.append((name, module, result.shape))

    return hook
