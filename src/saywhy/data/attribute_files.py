"""Attributes given directly instead of parsed from captions.

Captions are one source of image attributes among others: CUB's 312 binary attribute
labels, or a CSV / JSONL file mapping each image to a list of attribute phrases.
The result attaches ``attributes`` to the dataset's records.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

from saywhy.data.records import Dataset
from saywhy.data.text_files import read_lines, read_text
from saywhy.errors import SaywhyError


def cub_attribute_phrase(name: str) -> str:
    """Turn a CUB attribute name into an "adjective noun" phrase.

    >>> cub_attribute_phrase("has_wing_color::blue")
    'blue wing'
    >>> cub_attribute_phrase("has_bill_shape::curved_(up_or_down)")
    'curved bill'
    >>> cub_attribute_phrase("has_size::small_(5_-_9_in)")
    'small size'
    """
    category, _, value = name.partition("::")
    value = re.sub(r"_?\(.*\)", "", value).replace("_", " ").strip()
    noun = category.removeprefix("has_")
    noun = re.sub(r"_(color|shape|pattern|length)$", "", noun).replace("_", " ").strip()
    return f"{value} {noun}".strip()


def read_cub_attribute_names(path: Path) -> dict[int, str]:
    """``attributes.txt``: ``<attribute_id> <has_part_kind::value>``."""
    names = {}
    for line in read_text(path).splitlines():  # not UTF-8: one line naming the file
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            names[int(fields[0])] = cub_attribute_phrase(fields[1])
    return names


def cub_attribute_files(cub_root: Path) -> tuple[Path, Path]:
    """Where CUB keeps its labels (``attributes/image_attribute_labels.txt``) and names
    (``attributes.txt``, beside ``CUB_200_2011/`` in the official archive, or inside it)."""
    labels = cub_root / "attributes" / "image_attribute_labels.txt"
    for names in (cub_root.parent / "attributes.txt", cub_root / "attributes" / "attributes.txt", cub_root / "attributes.txt"):
        if names.is_file():
            return labels, names
    return labels, cub_root.parent / "attributes.txt"


def attach_cub_binary_attributes(dataset: Dataset, labels: str | Path, names: str | Path) -> Dataset:
    """Attach CUB's ``image_attribute_labels.txt`` (``<image> <attribute> <is_present> ...``).

    Lines that do not parse are skipped and counted in ``dataset.skipped``.
    """
    labels, names = Path(labels), Path(names)
    for path in (labels, names):
        if not path.is_file():
            raise SaywhyError(f"{path} does not exist: CUB attributes need image_attribute_labels.txt and attributes.txt")
    phrase_of = read_cub_attribute_names(names)
    per_image: dict[int, list[str]] = {}
    skipped: Counter = Counter(dataset.skipped)
    lines, undecodable = read_lines(labels)
    if undecodable:
        skipped["attribute label line not UTF-8"] += undecodable
    for line in lines:
        fields = line.split()
        try:
            image_id, attribute_id, present = int(fields[0]), int(fields[1]), fields[2] == "1"
        except (IndexError, ValueError):
            skipped["malformed attribute label"] += 1
            continue
        if present and attribute_id in phrase_of:
            per_image.setdefault(image_id, []).append(phrase_of[attribute_id])
    return _attach(dataset, per_image, skipped)


def attach_attribute_file(dataset: Dataset, path: str | Path) -> Dataset:
    """Attach attributes from CSV (``image,attributes`` with ``;``-separated phrases) or JSONL.

    The image is named by its id or by its path relative to ``images/``; JSONL lines are
    ``{"image": ..., "attributes": [...]}``. Unknown images and bad lines are counted. The file is
    UTF-8 (or UTF-16/32 with a byte-order mark); any other encoding is a one-line error.
    """
    path = Path(path)
    if not path.is_file():
        raise SaywhyError(f"attribute file {path} does not exist")
    by_key = {str(r.image_id): r.image_id for r in dataset.records}
    by_key.update({r.path.relative_to(dataset.root / "images").as_posix(): r.image_id for r in dataset.records
                   if r.path.is_relative_to(dataset.root / "images")})
    skipped: Counter = Counter(dataset.skipped)
    per_image: dict[int, list[str]] = {}
    for key, phrases in _read_pairs(path, skipped):
        image_id = by_key.get(key)
        if image_id is None:
            skipped["attribute row for an unknown image"] += 1
            continue
        per_image.setdefault(image_id, []).extend(p.strip().lower() for p in phrases if p.strip())
    return _attach(dataset, per_image, skipped)


def _read_pairs(path: Path, skipped: Counter):
    if path.suffix.lower() in (".jsonl", ".json"):
        for line in read_text(path).splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                attributes = row["attributes"]
                if isinstance(attributes, str):  # "red crown; black wing", as in the CSV, not its letters
                    attributes = attributes.split(";")
                if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
                    raise TypeError("attributes must be a list of phrases or a ';'-separated string")
                yield str(row["image"]), attributes
            except (json.JSONDecodeError, KeyError, TypeError):
                skipped["malformed attribute row"] += 1
        return
    with io.StringIO(read_text(path), newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("image") or row.get("attributes") is None:
                skipped["malformed attribute row"] += 1
                continue
            yield row["image"].strip(), row["attributes"].split(";")


def _attach(dataset: Dataset, per_image: dict[int, list[str]], skipped: Counter) -> Dataset:
    records = [replace(r, attributes=tuple(per_image[r.image_id])) if r.image_id in per_image else r
               for r in dataset.records]
    missing = sum(r.image_id not in per_image for r in dataset.records)
    if missing:
        skipped["no attributes given"] = missing
    return replace(dataset, records=records, skipped=dict(skipped))
