"""Pictures for the pages: thumbnails, heatmap overlays, and where they are kept.

A page never names a file: it gets a URL from a *media sink*, :class:`MediaStore` for the
app (bytes kept in memory, served by content id at ``/media/<id>``) or :class:`InlineMedia`
for the report (a ``data:`` URI). Overlays are drawn with PIL from the library's heatmap
arrays (values in [0, 1] at the image's pixels) through one matplotlib colormap.
"""
from __future__ import annotations

import base64
import hashlib
import io
import re
import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np
from PIL import Image

MEDIA_ID = re.compile(r"^[0-9a-f]{24}$")
THUMBNAIL = 128  # px, the longer side of a thumbnail
PICTURE = 256  # px, the longer side of an explained image and its heatmaps


def jpeg(image: Image.Image, size: int, quality: int = 82) -> bytes:
    """``image`` shrunk to fit ``size`` x ``size`` (never enlarged), as JPEG bytes."""
    image = image.convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@lru_cache(maxsize=1)
def _colormap() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, size: int = PICTURE, opacity: float = 0.5) -> bytes:
    """A heatmap (H, W) in [0, 1] at ``image``'s pixels, coloured and blended over it, as JPEG bytes.

    >>> data = overlay(Image.new("RGB", (8, 6)), np.eye(6, 8))
    >>> Image.open(io.BytesIO(data)).size
    (8, 6)
    """
    base = image.convert("RGB")
    base.thumbnail((size, size))
    values = np.nan_to_num(np.clip(np.asarray(heatmap, np.float64), 0.0, 1.0))
    levels = Image.fromarray((values * 255).astype(np.uint8)).resize(base.size, Image.BILINEAR)
    colour = Image.fromarray(_colormap()[np.asarray(levels)])
    buffer = io.BytesIO()
    Image.blend(base, colour, opacity).save(buffer, format="JPEG", quality=82)
    return buffer.getvalue()


class MediaStore:
    """Pictures in memory by content id, least recently used dropped past ``max_bytes`` (the app's sink)."""

    def __init__(self, max_bytes: int = 256 * 2**20, prefix: str = "/media/"):
        self.max_bytes, self.prefix = max_bytes, prefix
        self._items: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def put(self, data: bytes, mime: str = "image/jpeg") -> str:
        """Keep ``data`` and return its URL."""
        key = hashlib.sha256(data).hexdigest()[:24]
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            else:
                self._items[key] = (data, mime)
                self._size += len(data)
                while self._size > self.max_bytes and len(self._items) > 1:
                    _, (old, _) = self._items.popitem(last=False)
                    self._size -= len(old)
        return self.prefix + key

    def get(self, key: str) -> tuple[bytes, str] | None:
        """The bytes and type of ``key``, or None (a malformed id is never looked up)."""
        if not MEDIA_ID.match(key):
            return None
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found


class InlineMedia:
    """Pictures as ``data:`` URIs (the report's sink: one file, nothing to fetch)."""

    def put(self, data: bytes, mime: str = "image/jpeg") -> str:
        return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
