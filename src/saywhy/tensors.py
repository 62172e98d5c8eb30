"""Telling tensors apart without importing torch.

``import torch`` costs a second or more; code that only needs to know whether an input is a
tensor (a cache-hit explain of image files, the web app's pages, dataset readers) asks
:func:`is_tensor`, which imports nothing: while torch is not imported, no object can be one
of its tensors.
"""
from __future__ import annotations

import sys
from typing import Any


def is_tensor(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.Tensor``; False, without importing torch, while torch is not imported.

    >>> is_tensor([1.0])
    False
    """
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)
