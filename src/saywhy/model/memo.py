"""Values computed once per network object (weight digests, layer discovery), recomputed when it changes.

A value is keyed on the module itself, held weakly (a memo never keeps a network alive),
and on :func:`state_token`: the identity, storage address, shape, dtype and in-place
version counter of every parameter and buffer, and the identity of every sub-module. An
optimizer step, ``load_state_dict``, an in-place ``copy_``/``add_`` under ``no_grad``, a
tensor replaced or a sub-module swapped all give a new token, so a changed network is
never served a stale value. Reading the token costs well under a millisecond for a
ResNet-50; the values it guards cost tens (a SHA-256 of the weights, a probe forward pass).

Writes through ``tensor.data`` bypass PyTorch's version counters; after such a write call
:func:`forget` (saywhy itself never writes that way).

>>> from torch import nn
>>> net = nn.Linear(2, 2)
>>> calls = []
>>> _ = memoized(net, "demo", lambda: calls.append(1) or len(calls))
>>> memoized(net, "demo", lambda: calls.append(1) or len(calls))  # same weights: not recomputed
1
>>> _ = net.weight.detach().add_(1.0)                                # an in-place change bumps the version
>>> memoized(net, "demo", lambda: calls.append(1) or len(calls))
2
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import TypeVar

from torch import nn

T = TypeVar("T")
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {key: (token, value)}


def state_token(model: nn.Module) -> tuple:
    """A cheap fingerprint of what ``model`` computes with: its tensors' identities and versions, its modules."""
    tensors = tuple((name, id(t), t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device)
                    for name, t in (*model.named_parameters(remove_duplicate=False),
                                    *model.named_buffers(remove_duplicate=False)))
    return tensors, tuple(id(m) for m in model.modules())


def memoized(model: nn.Module, key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, run once per ``(model, key)`` while :func:`state_token` of ``model`` stays the same."""
    token = state_token(model)
    entries = _MEMO.get(model)
    if entries is None:
        entries = _MEMO[model] = {}
    hit = entries.get(key)
    if hit is not None and hit[0] == token:
        return hit[1]
    value = compute()
    entries[key] = (token, value)
    return value


def forget(model: nn.Module) -> None:
    """Drop every value memoized for ``model`` (after writing its weights through ``tensor.data``)."""
    _MEMO.pop(model, None)


def remember(model: nn.Module, key: Hashable, value: object) -> None:
    """Store ``value`` for ``(model, key)``, valid while :func:`state_token` of ``model`` stays the same."""
    entries = _MEMO.get(model)
    if entries is None:
        entries = _MEMO[model] = {}
    entries[key] = (state_token(model), value)


def recall(model: nn.Module, key: Hashable) -> object | None:
    """What :func:`remember` stored for ``(model, key)``, or None when nothing was or ``model`` changed since."""
    hit = _MEMO.get(model, {}).get(key)
    return hit[1] if hit is not None and hit[0] == state_token(model) else None
