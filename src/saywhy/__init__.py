"""saywhy: say in words why an image classifier decided what it did.

Implements "Interpreting CNN decisions by textual summarization" (filter-attribute
p.d.f., eq. 1-9) for any PyTorch classifier whose head is global average pooling + one
linear layer. The library is three calls::

    session = saywhy.fit(model, "my_dataset", arch="torchvision:resnet18", out="exp")
    session(images, target=None)        # explanations: sentence, attributes, probabilities
    saywhy.load("exp")                  # the same, later, or from the command line

Names are imported on first use, so ``import saywhy`` stays fast (no torch).
"""
from __future__ import annotations

from typing import Any

from saywhy.errors import SaywhyError

__version__ = "0.1.0"
__all__ = ["SaywhyError", "__version__", "fit", "load", "Session", "Explainer", "ExplainerConfig", "Preprocess"]

_LAZY = {"fit": ("saywhy.api", "fit"), "load": ("saywhy.api", "load"),
         "Session": ("saywhy.pipeline", "ExplainerSession"), "Explainer": ("saywhy.explain.explainer", "Explainer"),
         "ExplainerConfig": ("saywhy.explain.explainer", "ExplainerConfig"),
         "Preprocess": ("saywhy.data.images", "Preprocess")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'saywhy' has no attribute {name!r}")
