"""The in-memory form of a dataset: one record per image, whatever the source.

Every reader (CUB layout, synthbirds, attribute CSV/JSONL) produces these, so the rest
of saywhy never sees a file format.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Keypoint:
    """A part location in image pixels; ``visible`` is False where the part is hidden."""

    x: float
    y: float
    visible: bool


@dataclass(frozen=True)
class ImageRecord:
    """One image with everything known about it.

    ``captions`` is None where the image has no caption file (not the same as an
    empty file); ``attributes`` holds attributes given directly (CUB's binary labels,
    a CSV or JSONL), None where none were given.
    """

    image_id: int
    path: Path
    class_id: int
    is_train: bool
    bbox: tuple[float, float, float, float] | None = None  # x, y, width, height
    keypoints: dict[str, Keypoint] = field(default_factory=dict)
    captions: tuple[str, ...] | None = None
    attributes: tuple[str, ...] | None = None


@dataclass
class Dataset:
    """Images, classes and parts of one dataset.

    Class ids keep the dataset's own numbering (CUB subsets are not contiguous);
    ``class_ids`` sorted ascending defines the model's output index of each class.

    >>> ds = Dataset(root=Path("."), class_names={7: "007.Parakeet_Auklet"}, records=[])
    >>> ds.class_index(7)
    0
    """

    root: Path
    class_names: dict[int, str]
    records: list[ImageRecord]
    part_names: dict[int, str] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> how many images or lines
    examples: dict[str, str] = field(default_factory=dict)  # reason -> the first file skipped for it

    @property
    def class_ids(self) -> list[int]:
        return sorted(self.class_names)

    def class_index(self, class_id: int) -> int:
        return self.class_ids.index(class_id)

    def split(self, train: bool) -> list[ImageRecord]:
        return [r for r in self.records if r.is_train == train]

    def with_captions(self, records: list[ImageRecord] | None = None) -> list[ImageRecord]:
        records = self.records if records is None else records
        return [r for r in records if r.captions is not None]
