"""Forward hooks in one context manager that always removes them.

Everything saywhy reads from a network passes through :func:`capture`, so no hook can
outlive the call that needed it, even when the model raises. Recorded tensors are
detached unless ``keep_grad=True`` (Grad-CAM differentiates the class score with
respect to a recorded map).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from saywhy.errors import SaywhyError

if TYPE_CHECKING:
    import torch
    from torch import nn


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (dotted, as in ``model.named_modules()``)."""
    from torch import nn

    try:  # a walk down the dotted path: no listing of every module on each forward pass
        found = model.get_submodule(name) if name else model
        if isinstance(found, nn.Module):
            return found
    except (AttributeError, TypeError):
        pass
    modules = dict(model.named_modules())
    if name not in modules:
        close = [n for n in modules if n and (name in n or n.endswith(name.split(".")[-1]))][:8]
        raise SaywhyError(f"model has no layer named {name!r}; similar names: {', '.join(close) or 'none'}")
    return modules[name]


@contextmanager
def capture(
    model: nn.Module, outputs: Sequence[str] = (), inputs: Sequence[str] = (), keep_grad: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of the layers named in ``outputs`` and the input of those in ``inputs``.

    The dict is filled by each forward pass (keys ``"out:NAME"`` and ``"in:NAME"``); reading
    a key that no forward pass filled is a loud error, never an empty result. Tensors are
    detached, or with ``keep_grad=True`` kept as the forward pass made them, attached to
    its autograd graph (run that pass with gradients enabled).

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> with capture(net, outputs=["0"], inputs=["3"]) as seen:
    ...     _ = net(torch.zeros(1, 3, 8, 8))
    >>> tuple(seen["out:0"].shape), tuple(seen["in:3"].shape)
    ((1, 4, 6, 6), (1, 4))
    """
    seen: dict[str, torch.Tensor] = _LoudDict()
    handles = []
    try:
        for name in outputs:
            handles.append(get_module(model, name).register_forward_hook(_store(seen, f"out:{name}", True, keep_grad)))
        for name in inputs:
            handles.append(get_module(model, name).register_forward_hook(_store(seen, f"in:{name}", False, keep_grad)))
        yield seen
    finally:
        for handle in handles:
            handle.remove()


class _LoudDict(dict):
    def __missing__(self, key: str) -> torch.Tensor:
        raise SaywhyError(f"layer {key.split(':', 1)[1]!r} produced nothing in the forward pass: it is not on the model's path")


def _store(seen: dict, key: str, output: bool, keep_grad: bool):
    def hook(module: nn.Module, args: tuple, result: torch.Tensor) -> None:
        value = result if output else args[0]
        seen[key] = value if keep_grad else value.detach()

    return hook
