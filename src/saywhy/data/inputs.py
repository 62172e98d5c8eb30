"""What a user may hand to ``explain``: tensors, PIL images, paths, folders, records, or a list of them.

Everything becomes a flat list of items that :class:`~saywhy.data.images.ImageDataset`
reads, with a name for each (the path, or ``"tensor[3]"``), so that results can say
which input they belong to.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saywhy.data.images import IMAGE_SUFFIXES
from saywhy.data.records import ImageRecord
from saywhy.errors import SaywhyError
from saywhy.tensors import is_tensor

Box = tuple[float, float, float, float]  # x, y, width, height in image pixels


def as_items(inputs: Any) -> list[Any]:
    """A flat list of records, paths, PIL images and (3, H, W) tensors.

    A single path or string is one image (never its characters); a folder is its image
    files, found recursively and sorted by path; a (N, 3, H, W) tensor is N images.

    >>> as_items("bird.jpg")
    [PosixPath('bird.jpg')]
    >>> import torch
    >>> [tuple(t.shape) for t in as_items(torch.zeros(2, 3, 8, 8))]
    [(3, 8, 8), (3, 8, 8)]
    """
    from PIL import Image

    if isinstance(inputs, (str, Path)):
        path = Path(inputs)
        return list_images(path) if path.is_dir() else [path]
    if isinstance(inputs, (ImageRecord, Image.Image)):
        return [inputs]
    if is_tensor(inputs):
        if not inputs.is_floating_point():
            raise SaywhyError(f"a {str(inputs.dtype).replace('torch.', '')} tensor is not a preprocessed input: pass "
                              "float tensors normalized as the network expects, or PIL images or paths")
        if inputs.ndim == 3:
            return [inputs]
        if inputs.ndim == 4:
            return list(inputs)
        raise SaywhyError(f"a tensor input must be (3, H, W) or (N, 3, H, W), got shape {tuple(inputs.shape)}")
    if isinstance(inputs, np.ndarray):
        raise SaywhyError("numpy arrays are ambiguous (HWC or CHW, 0-255 or normalized): pass a PIL image "
                          "(Image.fromarray) or a preprocessed torch tensor")
    if isinstance(inputs, Sequence) or hasattr(inputs, "__iter__"):
        return [item for element in inputs for item in as_items(element)]
    raise SaywhyError(f"cannot explain a {type(inputs).__name__}: give tensors, PIL images, paths or a folder")


def list_images(folder: str | Path) -> list[Path]:
    """Image files under a folder, recursively, sorted by path; none is an error."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise SaywhyError(f"image folder {folder} does not exist: pass a folder of images")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise SaywhyError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
    return found


def item_name(item: Any, position: int) -> str:
    if isinstance(item, ImageRecord):
        return str(item.path)
    if isinstance(item, (str, Path)):
        return str(item)
    return f"{'tensor' if is_tensor(item) else 'image'}[{position}]"


def with_boxes(items: list[Any], box: Box | Sequence[Box | None] | None) -> list[Any]:
    """Give each item its box (one box for all, or one per item): paths become records with a box.

    Only files can carry a box; tensors are used as they are.
    """
    if box is None:
        return items
    if hasattr(box, "tolist"):  # a tensor or array
        box = box.tolist()
    boxes = [box] * len(items) if _is_one_box(box) else list(box)
    if len(boxes) != len(items):
        raise SaywhyError(f"{len(boxes)} boxes for {len(items)} images: give one box, or one per image")
    out = []
    for position, (item, b) in enumerate(zip(items, boxes)):
        if b is None:
            out.append(item)
            continue
        b = check_box(b)
        if isinstance(item, ImageRecord):
            out.append(dataclasses.replace(item, bbox=b))
        elif isinstance(item, (str, Path)):
            out.append(ImageRecord(image_id=-1 - position, path=Path(item), class_id=-1, is_train=False, bbox=b))
        else:
            raise SaywhyError("a box can only be applied to image files or records; crop tensors and PIL images yourself")
    return out


def check_box(box: Sequence[float]) -> Box:
    """x, y, width, height: four finite numbers, width and height above 0.

    >>> check_box([1, 2, 3, 4])
    (1.0, 2.0, 3.0, 4.0)
    """
    values = tuple(float(v) for v in box)
    if len(values) != 4 or not all(np.isfinite(values)) or values[2] <= 0 or values[3] <= 0:
        raise SaywhyError(f"a box is x,y,width,height with finite numbers and width, height > 0, got {box}")
    return values  # type: ignore[return-value]


def has_box(item: Any) -> bool:
    return isinstance(item, ImageRecord) and item.bbox is not None


def _is_one_box(box: Any) -> bool:
    return len(box) == 4 and all(isinstance(v, (int, float, np.floating, np.integer)) for v in box)
