"""Find the final feature maps and the linear head of a classifier, and prove they explain it.

The paper needs the feature maps f(x) fed to global average pooling and the weight
matrix W of the one fully connected layer after it. Candidates are found by running one
forward pass (of a seeded random batch of two, never the caller's zeros) and watching
which modules fire; a (layer, head) pair is accepted only if, on that batch, the head
applied to the spatial average of the layer's maps gives the model's own logits (and the
average is the head's own input). A network whose decision is anything else (an MLP
after pooling, a flattened map, a class token) is refused: saywhy cannot explain it.

Supported shapes of "maps":

* a 4-D output (N, C, h, w): CNNs (torchvision ResNet/EfficientNet, timm, SmallCNN);
* a 4-D channels-last output (N, h, w, C), as timm's Swin writes its maps;
* a 3-D token output (N, L, C) whose mean over the patch tokens (``model.num_prefix_tokens``
  class/register tokens left out) feeds the head: timm ViTs built with ``global_pool='avg'``;
  the maps are the patch tokens laid out on the patch grid (N, C, h, w);
* either of them followed, after pooling, by a LayerNorm over channels (ConvNeXt's
  ``classifier.0``, a timm ViT's ``fc_norm``). LayerNorm is not linear, but its mean and
  variance are per-image scalars of the pooled vector p, so LN(p) is exactly the spatial
  average of the maps g_k = gamma_k (f_k - mean(p)) / std(p) + beta_k: f_k shifted and scaled
  by per-image constants. Those g_k are the maps saywhy reads (``LayerChoice.norm``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from saywhy.errors import SaywhyError
from saywhy.model.hooks import get_module

if TYPE_CHECKING:
    import torch
    from torch import nn

PROBE_BATCH = 2
PROBE_SEED = 0
TOLERANCE = 1e-4  # relative, float32 and float64 models
TOLERANCE_HALF = 1e-2  # float16 / bfloat16 models
_LISTED = 6  # candidates named in an error message
_WHAT = "saywhy explains global-average-pooling + one linear layer classifiers"


@dataclass(frozen=True)
class LayerChoice:
    """The layer whose output maps are f(x) and the linear head whose input is phi(f(x)).

    ``prefix_tokens`` is set for token maps: the layer outputs (N, L, C) and tokens
    ``[prefix_tokens:]`` form the patch ``grid`` (h, w). ``channels_last``: the layer outputs
    (N, h, w, C). ``norm`` names a LayerNorm applied to the pooled vector before the head
    (the maps are normalized the same way). ``activations.feature_maps`` turns the layer's
    output into (N, C, h, w) maps whatever the case.
    """

    feature_layer: str
    head: str
    n_filters: int
    n_classes: int
    prefix_tokens: int | None = None
    grid: tuple[int, int] | None = None
    norm: str | None = None
    max_error: float = 0.0
    channels_last: bool = False


@dataclass(frozen=True)
class LayerCandidate:
    """One (feature layer, head) pair with matching width, and whether it reproduces the logits.

    ``max_error``: the larger of max|head(mean of maps) - logits| / max|logits| and
    max|mean of maps - head input| / max|head input| on the probe batch; ``exact`` when it
    is within tolerance (1e-4 for float32) and the maps are not computed after global pooling.
    """

    feature_layer: str
    head: str
    n_filters: int
    n_classes: int
    map_shape: tuple[int, ...]  # (C, h, w) of the maps saywhy reads, one image
    exact: bool
    max_error: float
    prefix_tokens: int | None = None
    norm: str | None = None
    channels_last: bool = False
    after_pooling: bool = False  # computed from the pooled vector (a 1x1 conv after pooling): never exact

    @property
    def spatial(self) -> int:
        return int(math.prod(self.map_shape[1:]))

    def describe(self) -> str:
        extra = (" tokens" if self.prefix_tokens is not None else "") + (" channels-last" if self.channels_last else "") \
            + (f" +{self.norm}" if self.norm else "") \
            + (" after pooling" if self.after_pooling else "")
        return (f"{self.feature_layer} {'x'.join(map(str, self.map_shape))}{extra} -> {self.head} "
                f"error {self.max_error:.2g}")

    def choice(self) -> LayerChoice:
        grid = tuple(self.map_shape[1:]) if self.prefix_tokens is not None else None
        return LayerChoice(self.feature_layer, self.head, self.n_filters, self.n_classes,
                           prefix_tokens=self.prefix_tokens, grid=grid, norm=self.norm, max_error=self.max_error,
                           channels_last=self.channels_last)


@dataclass
class _Event:
    order: int
    name: str
    module: nn.Module
    shape: tuple[int, ...]
    pooled: torch.Tensor | None = None  # (N, C) float64 spatial mean, maps only
    map_shape: tuple[int, ...] | None = None
    prefix: int | None = None  # token maps
    channels_last: bool = False
    head_in: torch.Tensor | None = None  # (N, in_features) float64, linear layers on 2-D inputs only
    is_norm: bool = False  # a LayerNorm over the channels of a pooled (N, C) or (N, C, 1, 1) vector
    is_pool: bool = False  # a pooling module that turned a spatial map into one value per channel


@dataclass
class _Trace:
    events: list[_Event]
    logits: torch.Tensor  # float64
    dtype: torch.dtype

    def last(self, name: str) -> _Event | None:
        return next((e for e in reversed(self.events) if e.name == name), None)

    def latest(self, kind: str) -> list[_Event]:
        """The last call of every module of a kind ('map', 'linear', 'norm'), in running order."""
        found: dict[str, _Event] = {}
        for e in self.events:
            if {"map": e.pooled is not None, "linear": e.head_in is not None, "norm": e.is_norm}[kind]:
                found.pop(e.name, None)
                found[e.name] = e
        return list(found.values())


def probe_batch(example: torch.Tensor, batch: int = PROBE_BATCH, seed: int = PROBE_SEED) -> torch.Tensor:
    """Seeded random inputs of the example's shape, dtype and device: a zero image could hide a wrong layer."""
    import torch

    dtype = example.dtype if example.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *example.shape[1:]), generator=generator).to(device=example.device, dtype=dtype)


def layer_candidates(model: nn.Module, example: torch.Tensor) -> list[LayerCandidate]:
    """Every (map layer, head) pair whose widths match, each checked on a random probe batch.

    Heads are the ``nn.Linear`` layers that output as many values as the model has logits;
    maps are 4-D outputs (N, C, h, w) and token outputs (N, L, C) with C = the head's
    inputs. In running order (the map's, then the head's).
    """
    trace = _run(model, example)
    return _pairs(trace, _heads(model, trace, None))


def find_layers(
    model: nn.Module,
    example: torch.Tensor,
    feature_layer: str | None = None,
    head: str | None = None,
) -> LayerChoice:
    """Pick the final feature maps and the linear head, by name or automatically; refuse if inexact.

    Automatic choice among the exact pairs: a real spatial map beats the 1x1 output of
    global pooling itself, then the last module to run wins (so a post-activation block
    output beats the bare conv before it). A named ``feature_layer``/``head`` is checked
    the same way. ``example`` gives only shape, dtype and device: the check runs on a
    seeded random batch of two (:func:`probe_batch`). The choice is made once per model
    object, input shape, dtype and device while the weights stay the same
    (:mod:`saywhy.model.memo`); a refusal is never stored.
    """
    from saywhy.model.memo import memoized

    key = ("find_layers", tuple(example.shape[1:]), example.dtype, example.device, feature_layer, head)
    return memoized(model, key, lambda: _find_layers(model, example, feature_layer, head))


def _find_layers(model: nn.Module, example: torch.Tensor, feature_layer: str | None, head: str | None) -> LayerChoice:
    if feature_layer is not None:
        get_module(model, feature_layer)
    trace = _run(model, example)
    heads = _heads(model, trace, head)
    pairs = _pairs(trace, heads)
    hint = "; --layer/--head cannot make it exact: give the network global average pooling and one nn.Linear head"
    if feature_layer is not None:
        event = trace.last(feature_layer)
        named = [p for p in pairs if p.feature_layer == feature_layer]
        if not named:
            shape = f"outputs {tuple(event.shape[1:])}" if event is not None else "does not run in the forward pass"
            widths = ", ".join(sorted({str(h.module.in_features) for h in heads}))
            raise SaywhyError(f"layer {feature_layer!r} {shape}: not a (C, h, w) map or (L, C) tokens of the width "
                              f"{widths} that head {heads[-1].name!r} takes; pass --layer with the map that is pooled "
                              "into the head, or leave it out to search")
        pairs = named
    exact = [p for p in pairs if p.exact]
    if not exact:
        if feature_layer is not None:
            best = min(pairs, key=lambda p: p.max_error)
            raise SaywhyError(f"layer {feature_layer!r} does not explain the logits: {_WHAT}, and the head applied to "
                              f"the average of its maps misses them ({best.describe()}); leave --layer out to search")
        raise SaywhyError(_refusal(model, trace, heads, pairs, hint))
    best = max(exact, key=lambda p: (p.spatial > 1, trace.last(p.feature_layer).order, trace.last(p.head).order))
    return best.choice()


def _refusal(model: nn.Module, trace: _Trace, heads: list[_Event], pairs: list[LayerCandidate], hint: str) -> str:
    vit = (" (a timm ViT that pools its class token: build it with global_pool='avg')"
           if getattr(model, "global_pool", None) == "token" else "")
    if pairs:
        ranked = sorted(pairs, key=lambda p: p.max_error)
        listed = ", ".join(p.describe() for p in ranked[:_LISTED])
        more = f", {len(ranked) - _LISTED} more" if len(ranked) > _LISTED else ""
        found = f"candidates: {listed}{more}"
    else:
        maps = [e for e in trace.events if len(e.shape) in (3, 4)]
        seen = ", ".join(f"{e.name} {'x'.join(map(str, e.shape[1:]))}" for e in maps[-4:]) or "no layer with a map output"
        found = (f"heads: {', '.join(f'{h.name} ({h.module.in_features}->{h.module.out_features})' for h in heads)}; "
                 f"no layer outputs a map of that width (last maps: {seen})")
    return f"the head's output is not a linear function of the average-pooled map of any layer{vit}: {_WHAT} ({found}){hint}"


def _run(model: nn.Module, example: torch.Tensor) -> _Trace:
    """One forward pass of the probe batch, recording what every module outputs."""
    import torch
    from torch import nn

    widths = {m.in_features for m in model.modules() if isinstance(m, nn.Linear)}
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    events: list[_Event] = []
    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(_recorder(events, name, widths, prefix, model)))
        with torch.no_grad():
            model.eval()
            x = probe_batch(example)
            try:
                out = model(x)
            except SaywhyError:
                raise
            except (RuntimeError, AssertionError, ValueError, TypeError) as error:
                detail = " ".join(str(error).split())[:160] or type(error).__name__
                raise SaywhyError(f"the model fails on a batch of shape {tuple(x.shape)} ({detail}): check the "
                                  "preprocessing's image size") from None
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        what = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SaywhyError(f"the model returns {what}, not a (batch, classes) tensor of logits: {_WHAT}")
    return _Trace(events, out.detach().double(), x.dtype)


def _recorder(events: list[_Event], name: str, widths: set[int], prefix: int, model: nn.Module):
    import torch
    from torch import nn

    def hook(module: nn.Module, args: tuple, result) -> None:
        if not isinstance(result, torch.Tensor):
            return
        event = _Event(len(events), name, module, tuple(result.shape))
        if isinstance(module, nn.Linear) and args and isinstance(args[0], torch.Tensor) and args[0].dim() == 2 \
                and result.dim() == 2:
            event.head_in = args[0].detach().double()
        elif result.is_floating_point() and result.dim() == 4 and result.shape[1] in widths:
            event.pooled = result.detach().float().mean((2, 3)).double()  # float32 sums: no float64 copy of the map
            event.map_shape = tuple(result.shape[1:])
        elif result.is_floating_point() and result.dim() == 4 and result.shape[3] in widths:
            event.pooled = result.detach().float().mean((1, 2)).double()
            event.map_shape, event.channels_last = (result.shape[3], result.shape[1], result.shape[2]), True
        elif result.is_floating_point() and result.dim() == 3 and result.shape[2] in widths and result.shape[1] > prefix:
            grid = token_grid(model, result.shape[1] - prefix)
            if grid is not None:
                event.pooled = result.detach()[:, prefix:].float().mean(1).double()
                event.map_shape, event.prefix = (result.shape[2], *grid), prefix
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1 and result.dim() >= 2:
            event.is_norm = result.shape[1] == math.prod(result.shape[1:]) == module.normalized_shape[0]
        if "pool" in type(module).__name__.lower() and args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            event.is_pool = args[0].shape[2] * args[0].shape[3] > 1 and math.prod(result.shape[1:]) == args[0].shape[1]
        events.append(event)

    return hook


def token_grid(model: nn.Module, n_tokens: int) -> tuple[int, int] | None:
    """The (h, w) patch grid of ``n_tokens`` patch tokens: the model's ``patch_embed.grid_size``, else a square."""
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is not None and len(tuple(grid)) == 2 and int(grid[0]) * int(grid[1]) == n_tokens:
        return int(grid[0]), int(grid[1])
    side = math.isqrt(n_tokens)
    return (side, side) if side * side == n_tokens else None


def _heads(model: nn.Module, trace: _Trace, head: str | None) -> list[_Event]:
    from torch import nn

    n_logits = trace.logits.shape[1]
    linears = trace.latest("linear")
    if head is not None:
        module = get_module(model, head)
        if not isinstance(module, nn.Linear):
            raise SaywhyError(f"head {head!r} is a {type(module).__name__}, not nn.Linear: pass --head with a linear layer")
        event = trace.last(head)
        if event is None or event.head_in is None:
            raise SaywhyError(f"head {head!r} does not run on a (batch, features) input in the forward pass: pass --head "
                              "with the last linear layer")
        if module.out_features != n_logits:
            raise SaywhyError(f"head {head!r} outputs {event.module.out_features} values but the model outputs {n_logits} "
                              "logits: pass --head with the last linear layer")
        return [event]
    if not linears:
        raise SaywhyError("model has no linear head (nn.Linear) after global pooling; saywhy needs a "
                          "global-pooling + linear classifier: pass --head NAME if the head is another module type")
    heads = [e for e in linears if e.module.out_features == n_logits]
    if not heads:
        found = ", ".join(f"{e.name} ({e.module.in_features}->{e.module.out_features})" for e in linears[-4:])
        raise SaywhyError(f"no linear layer outputs the model's {n_logits} logits (found: {found}): {_WHAT}; "
                          "pass --layer/--head only for such a network")
    return heads


def _pairs(trace: _Trace, heads: list[_Event]) -> list[LayerCandidate]:
    import torch

    tolerance = TOLERANCE_HALF if trace.dtype in (torch.float16, torch.bfloat16) else TOLERANCE
    maps, norms = trace.latest("map"), trace.latest("norm")
    pooled_at = _global_pool(trace)
    pairs = []
    for h in heads:
        width = h.module.in_features
        for m in maps:
            if m.order >= h.order or m.map_shape[0] != width:
                continue
            options = [None] + [n for n in norms if m.order < n.order < h.order and n.module.normalized_shape[0] == width]
            best = None
            for norm in options:
                phi = m.pooled if norm is None else _layer_norm(m.pooled, norm.module)
                error = _error(phi, h, trace.logits)
                if best is None or error < best[0]:
                    best = (error, norm)
                if error <= tolerance:
                    break
            error, norm = best
            # A 1x1 "map" computed after global pooling (timm MobileNetV3's conv_head) is an MLP on the pooled
            # vector, not a filter map: exact arithmetic, but not the paper's phi = GAP(f).
            after = pooled_at is not None and m.order > pooled_at.order and not pooled_at.name.startswith(f"{m.name}.") \
                and m.map_shape[1:] in ((1, 1), ())
            pairs.append(LayerCandidate(m.name, h.name, width, h.module.out_features, m.map_shape,
                                        error <= tolerance and not after, error, m.prefix,
                                        norm.name if norm is not None else None, m.channels_last, after))
    return pairs


def _global_pool(trace: _Trace) -> _Event | None:
    """The pooling that ends the spatial part of the network: no map larger than 1x1 runs after it."""
    last_spatial = max((e.order for e in trace.events if len(e.shape) == 4 and e.shape[2] * e.shape[3] > 1), default=-1)
    return next((e for e in trace.events if e.is_pool and e.order > last_spatial), None)


def _layer_norm(pooled: torch.Tensor, module: nn.LayerNorm) -> torch.Tensor:
    import torch.nn.functional as F

    weight = module.weight.detach().double() if module.weight is not None else None
    bias = module.bias.detach().double() if getattr(module, "bias", None) is not None else None
    return F.layer_norm(pooled, module.normalized_shape, weight, bias, module.eps)


def _error(phi: torch.Tensor, head: _Event, logits: torch.Tensor) -> float:
    """Relative error of head(phi) against the logits and of phi against the head's own input."""
    import torch

    linear = head.module  # run in the model's own dtype and kernels, so TF32 or half rounding cancels
    with torch.no_grad():
        out = linear(phi.to(linear.weight.dtype)).double()
    on_logits = (out - logits).abs().max() / logits.abs().max().clamp_min(1e-12)
    on_input = (phi - head.head_in).abs().max() / head.head_in.abs().max().clamp_min(1e-12)
    return float(max(on_logits, on_input))
