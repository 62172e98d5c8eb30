"""saywhy: say in words why an image classifier decided what it did.

Implements "Interpreting CNN decisions by textual summarization" (filter-attribute
p.d.f., eq. 1-9) for any PyTorch classifier with a global-pooling + linear head.
"""
from __future__ import annotations

from saywhy.errors import SaywhyError

__version__ = "0.1.0"
__all__ = ["SaywhyError", "__version__"]
