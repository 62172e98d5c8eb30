"""Uploaded images: size limits, content sniffing, and a small in-memory store by content id.

An upload is trusted for nothing: its bytes are capped (``max_bytes``), its type is what
PIL finds in the content (the file name and the declared type are ignored), and its
pixel count is checked from the header against saywhy's limit
(:func:`saywhy.data.images.max_pixels`, ``$SAYWHY_MAX_PIXELS``) before it is decoded, so
a decompression bomb is refused without expanding it.
"""
from __future__ import annotations

import hashlib
import io
import re
import threading
import warnings
from collections import OrderedDict

from PIL import Image, UnidentifiedImageError

from saywhy.data.images import max_pixels
from saywhy.errors import SaywhyError

UPLOAD_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_UPLOAD_BYTES = 10 * 2**20


class UploadError(SaywhyError):
    """An upload that is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> Image.Image:
    """The RGB image in ``data``, or one line saying why it is refused.

    >>> decode_upload(b"not an image")
    Traceback (most recent call last):
    saywhy.web.uploads.UploadError: the upload is not an image saywhy can read (PNG, JPEG, GIF, BMP, TIFF, WebP...): choose an image file
    """
    if not data:
        raise UploadError("the upload is empty: choose an image file")
    if len(data) > max_bytes:
        raise UploadError(f"the upload has {len(data):,} bytes, more than the limit of {max_bytes:,}: "
                          "shrink the image or start the server with a larger --max-upload-mb", 413)
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > limit:
                    raise UploadError(f"the image has {image.width} x {image.height} pixels, more than the limit of "
                                      f"{limit:,}: shrink it (or raise SAYWHY_MAX_PIXELS for the server)", 413)
                image.load()
                return image.convert("RGB")
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"the image is too large to open safely (over {limit:,} pixels): shrink it", 413) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise UploadError("the upload is not an image saywhy can read (PNG, JPEG, GIF, BMP, TIFF, WebP...): "
                          "choose an image file") from None


class UploadStore:
    """The last ``capacity`` uploaded images, by the first 16 hex digits of their SHA-256."""

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self._items: OrderedDict[str, Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> str:
        image = decode_upload(data, max_bytes)
        key = hashlib.sha256(data).hexdigest()[:16]
        with self._lock:
            self._items[key] = image
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> Image.Image:
        if not UPLOAD_ID.match(key or ""):
            raise UploadError(f"{key!r} is not an upload id: upload the image again", 404)
        with self._lock:
            image = self._items.get(key)
        if image is None:
            raise UploadError("this upload is no longer in memory (the server keeps the last "
                              f"{self.capacity}): upload the image again", 404)
        return image
