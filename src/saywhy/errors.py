"""One exception type for every error a user can cause.

The CLI prints ``str(error)`` as a single line and exits non-zero, so each message
says what is wrong and what to do about it.
"""
from __future__ import annotations


class SaywhyError(Exception):
    """A user-facing error: bad input, missing file, mismatched model or data."""
