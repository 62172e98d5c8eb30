"""Images as tensors: loading, optional bounding-box crop, resize and normalization.

A corrupt or unreadable file must not crash a long run: :class:`ImageDataset` yields a
flag instead, and the caller drops and counts those images.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from saywhy.data.records import ImageRecord
from saywhy.errors import SaywhyError
from saywhy.tensors import is_tensor

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input; stored with every checkpoint and fitted explainer."""

    image_size: int = 64
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop: str = "none"  # "none" or "bbox": crop to the bounding box, the paper's setting

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, (int, np.integer)) \
                or len(self.mean) != 3 or len(self.std) != 3 or self.image_size < 1 \
                or not all(np.isfinite([*self.mean, *self.std])) or min(self.std) <= 0 or self.crop not in ("none", "bbox"):
            raise SaywhyError(f"preprocessing {self.to_dict()} is invalid: image_size >= 1, three means, three "
                              "positive stds, crop 'none' or 'bbox'")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        return cls(
            image_size=int(data["image_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            crop=data.get("crop", "none"),
        )

    def seen_box(self, image_size: tuple[int, int], bbox: tuple[float, float, float, float] | None) -> tuple[int, int, int, int]:
        """The (x0, y0, x1, y1) region of an image of (W, H) ``image_size`` that the network sees:
        the whole image, or (int(x), int(y), ceil(x + w), ceil(y + h)) with ``crop="bbox"``.

        >>> Preprocess(crop="bbox").seen_box((100, 80), (10.5, 20.0, 30.2, 40.0))
        (10, 20, 41, 60)
        """
        if self.crop == "bbox" and bbox is not None:
            x, y, w, h = bbox
            return (int(x), int(y), int(np.ceil(x + w)), int(np.ceil(y + h)))
        return (0, 0, int(image_size[0]), int(image_size[1]))

    def __call__(self, image: Image.Image, bbox: tuple[float, float, float, float] | None = None) -> torch.Tensor:
        image = image.convert("RGB")
        if self.crop == "bbox" and bbox is not None:
            image = crop_to_box(image, bbox)
        image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        import torch

        return torch.from_numpy(array.transpose(2, 0, 1).copy())


def max_pixels() -> int:
    """The largest image saywhy decodes (width x height): ``$SAYWHY_MAX_PIXELS``, default 100 million
    (a 10,000 x 10,000 photo); larger files are refused before decoding, so that a tiny file that
    expands to gigabytes (a decompression bomb) cannot take the machine's memory."""
    try:
        return int(os.environ.get("SAYWHY_MAX_PIXELS", 100_000_000))
    except ValueError:
        raise SaywhyError("SAYWHY_MAX_PIXELS must be a whole number of pixels, e.g. 100000000") from None


def open_image(path: str | Path) -> Image.Image:
    """Open an image fully as 8-bit RGB, or raise one clear line saying which file is bad.

    16-bit and 32-bit greyscale images are scaled to 8 bits (PIL's own conversion would clip
    them to white); images over :func:`max_pixels` are refused from their header alone. The
    EXIF orientation is applied, so the image is upright as a viewer shows it: boxes and points
    are in the upright image's pixels everywhere in saywhy (``read_cub`` converts CUB's, which
    are in the file's stored pixels, with :func:`upright_box` and :func:`upright_point`).
    """
    path = Path(path)
    if not path.is_file():
        if path.is_symlink():
            raise SaywhyError(f"image {path} is a link that leads nowhere (or round to itself): point it at the image")
        raise SaywhyError(f"image {path} does not exist: check the path")
    try:
        with Image.open(path) as image:
            limit = max_pixels()
            if image.width * image.height > limit:
                raise SaywhyError(f"image {path} has {image.width} x {image.height} pixels, more than the limit of "
                                  f"{limit:,}: shrink it, or raise SAYWHY_MAX_PIXELS if you trust the file")
            image.load()
            if exif_orientation(image) != 1:
                image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise SaywhyError(f"image {path} cannot be read ({error.__class__.__name__}): replace or remove the file") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() <= 65535 else float(array.max())
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


# EXIF orientation -> where a point (x, y) of a stored (W, H) image lies in the upright image
# (the transposes of PIL.ImageOps.exif_transpose, in continuous pixel coordinates)
_UPRIGHT = {
    2: lambda x, y, w, h: (w - x, y),
    3: lambda x, y, w, h: (w - x, h - y),
    4: lambda x, y, w, h: (x, h - y),
    5: lambda x, y, w, h: (y, x),
    6: lambda x, y, w, h: (h - y, x),
    7: lambda x, y, w, h: (h - y, w - x),
    8: lambda x, y, w, h: (y, w - x),
}


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 to 8) of an opened image; 1 (as stored) when absent, unknown or unreadable."""
    try:
        value = int(image.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block must not make a readable image unreadable
        return 1
    return value if value in _UPRIGHT else 1


def stored_geometry(path: str | Path) -> tuple[int, tuple[int, int]]:
    """(EXIF orientation, stored (W, H)) of an image file from its header; (1, (0, 0)) if it cannot be opened."""
    try:
        with Image.open(path) as image:
            return exif_orientation(image), image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return 1, (0, 0)


def image_size(path: str | Path) -> tuple[int, int]:
    """The (W, H) of the upright image (as :func:`open_image` returns it), from the header only.

    >>> image_size("photo_taken_sideways.jpg")  # doctest: +SKIP
    (3000, 4000)
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            return (height, width) if exif_orientation(image) in (5, 6, 7, 8) else (width, height)
    except (OSError, ValueError) as error:
        raise SaywhyError(f"image {path} cannot be read ({type(error).__name__}): replace or remove the file") from None


def upright_point(x: float, y: float, orientation: int, stored_size: tuple[int, int]) -> tuple[float, float]:
    """Where the point (x, y) of a stored image of (W, H) ``stored_size`` lies once its EXIF orientation is applied.

    >>> upright_point(10.0, 2.0, 6, (100, 50))  # rotated 90 degrees clockwise
    (48.0, 10.0)
    """
    if orientation not in _UPRIGHT:
        return (x, y)
    return _UPRIGHT[orientation](x, y, *stored_size)


def upright_box(bbox: tuple[float, float, float, float], orientation: int,
                stored_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The (x, y, w, h) box of a stored image in the upright image's pixels (the same content).

    >>> upright_box((10.0, 2.0, 30.0, 20.0), 6, (100, 50))
    (28.0, 10.0, 20.0, 30.0)
    """
    if orientation not in _UPRIGHT:
        return tuple(bbox)  # type: ignore[return-value]
    x, y, w, h = bbox
    (ax, ay), (bx, by) = upright_point(x, y, orientation, stored_size), upright_point(x + w, y + h, orientation, stored_size)
    return (min(ax, bx), min(ay, by), abs(bx - ax), abs(by - ay))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def crop_to_box(image: Image.Image, bbox: tuple[float, float, float, float]) -> Image.Image:
    """The (x, y, w, h) box of ``image``, the pixels (int(x), int(y)) to (ceil(x + w), ceil(y + h)).

    A box that is not four finite numbers, has no area, or lies wholly outside the image is
    refused (it would otherwise become an all-black input): the image is skipped and counted in
    long runs. A box partly outside keeps its size (the outside is black), as the heatmaps'
    geometry (:meth:`Preprocess.seen_box`) assumes.

    >>> crop_to_box(Image.new("RGB", (10, 10)), (2.5, 3.0, 4.0, 5.0)).size
    (5, 5)
    """
    x, y, w, h = (float(v) for v in bbox)
    if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        raise SaywhyError(f"box {tuple(bbox)} is not x, y, width, height with finite numbers and a positive size")
    left, top, right, bottom = int(x), int(y), int(np.ceil(x + w)), int(np.ceil(y + h))
    if right <= 0 or bottom <= 0 or left >= image.width or top >= image.height:
        raise SaywhyError(f"box {tuple(bbox)} lies outside the {image.width} x {image.height} image")
    return image.crop((left, top, right, bottom))  # a box partly outside keeps its geometry, padded black


def apply_preprocess(preprocess, image: Image.Image, bbox: tuple[float, float, float, float] | None = None) -> torch.Tensor:
    """A :class:`Preprocess`, or any callable from a PIL image to a (3, H, W) tensor (a torchvision
    transform); a box crops first for either."""
    if isinstance(preprocess, Preprocess):
        return preprocess(image, bbox)
    if bbox is not None:
        image = crop_to_box(image, bbox)
    tensor = preprocess(image.convert("RGB"))
    if not is_tensor(tensor) or tensor.ndim != 3:
        raise SaywhyError(f"the transform returned {type(tensor).__name__}, not a (3, H, W) tensor: "
                          "end it with transforms.ToTensor() (and Normalize)")
    return tensor


class ImageDataset:
    """Inputs as ``(tensor, index, ok)``; ``ok`` is False for unreadable files.

    A map-style dataset (``__len__`` and ``__getitem__``) for ``torch.utils.data.DataLoader``,
    defined without torch's base class so that reading images imports torch only when a
    tensor is made.

    An input is an :class:`ImageRecord` (its box is used where ``preprocess`` crops to it),
    a path, a PIL image, or a (3, H, W) tensor that is already preprocessed and used as is.
    """

    def __init__(self, items: Sequence, preprocess):
        self.items = list(items)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool]:
        item = self.items[index]
        if is_tensor(item):
            return item, index, True
        if isinstance(item, Image.Image):
            return apply_preprocess(self.preprocess, item), index, True
        path, bbox = (item.path, item.bbox) if isinstance(item, ImageRecord) else (Path(item), None)
        try:
            return apply_preprocess(self.preprocess, open_image(path), bbox), index, True
        except SaywhyError:
            import torch

            return torch.zeros(self._placeholder_shape()), index, False

    def _placeholder_shape(self) -> tuple[int, ...]:
        """The shape of what ``preprocess`` makes, for the row an unreadable file leaves empty
        (a torchvision transform may resize to any size)."""
        if isinstance(self.preprocess, Preprocess):
            return (3, self.preprocess.image_size, self.preprocess.image_size)
        return tuple(apply_preprocess(self.preprocess, Image.new("RGB", (256, 256))).shape)


def unreadable_images(records: Sequence[ImageRecord], crop: str = "none") -> list[Path]:
    """The files of ``records`` that cannot be decoded, or (``crop="bbox"``) whose box selects no pixel of
    the image: what a long run would skip and count. Decodes every image once, at a tiny size."""
    items = ImageDataset(records, Preprocess(image_size=4, crop=crop))
    return [records[i].path for i in range(len(records)) if not items[i][2]]
