"""Reader for the CUB-200-2011 layout with Reed et al.'s ``text_c10`` captions.

Serves real CUB, subsets of it (non-contiguous class ids, images without captions)
and synthbirds, which is written in the same layout. Malformed lines are skipped and
counted in ``Dataset.skipped`` rather than failing a long run.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from saywhy.data.images import stored_geometry, upright_box, upright_point
from saywhy.data.records import Dataset, ImageRecord, Keypoint
from saywhy.data.text_files import NotUTF8Error, read_lines, read_text
from saywhy.errors import SaywhyError

log = logging.getLogger(__name__)

REQUIRED_FILES = ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt")


def find_cub_root(root: str | Path) -> Path:
    """The folder holding ``images.txt``: ``root`` itself or ``root/CUB_200_2011``."""
    root = Path(root).expanduser()
    for candidate in (root, root / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    raise SaywhyError(
        f"{root} is not a CUB-200-2011 folder (no images.txt in it or in CUB_200_2011/): "
        "pass --root pointing at the unpacked dataset, or run 'saywhy data cub --dest DIR'"
    )


def find_caption_root(cub_root: Path, captions: str | Path | None = None) -> Path | None:
    """Reed et al.'s ``text_c10`` folder: given explicitly, or beside/inside the CUB folder."""
    if captions is not None:
        path = Path(captions).expanduser()
        if not path.is_dir():
            raise SaywhyError(f"caption folder {path} does not exist: pass the text_c10 folder with --captions")
        return path
    for candidate in (cub_root / "text_c10", cub_root.parent / "text_c10"):
        if candidate.is_dir():
            return candidate
    return None


def _rows(path: Path, n_fields: int, skipped: Counter) -> list[list[str]]:
    """Whitespace-separated rows with at least ``n_fields`` fields; others are counted."""
    rows = []
    lines, undecodable = read_lines(path)
    if undecodable:
        skipped[f"line not UTF-8 in {path.name}"] += undecodable
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        if len(fields) < n_fields:
            skipped[f"malformed line in {path.name}"] += 1
            continue
        rows.append(fields)
    return rows


def _int_map(path: Path, skipped: Counter) -> dict[int, str]:
    """id -> rest of the line; an id listed twice keeps its first line, and the others are counted."""
    out = {}
    for fields in _rows(path, 2, skipped):
        try:
            key = int(fields[0])
        except ValueError:
            skipped[f"malformed line in {path.name}"] += 1
            continue
        if key in out:
            skipped[f"duplicate id in {path.name} (first line kept)"] += 1
            continue
        out[key] = " ".join(fields[1:])
    return out


def _read_keypoints(cub_root: Path, part_names: dict[int, str], skipped: Counter) -> dict[int, dict[str, Keypoint]]:
    path = cub_root / "parts" / "part_locs.txt"
    keypoints: dict[int, dict[str, Keypoint]] = {}
    if not path.is_file():
        return keypoints
    for fields in _rows(path, 5, skipped):
        try:
            image_id, part_id = int(fields[0]), int(fields[1])
            x, y, visible = float(fields[2]), float(fields[3]), fields[4] not in ("0", "0.0")
        except ValueError:
            skipped["malformed line in part_locs.txt"] += 1
            continue
        name = part_names.get(part_id)
        if name is None:
            continue
        parts = keypoints.setdefault(image_id, {})
        if name in parts:
            skipped["duplicate (image, part) in part_locs.txt (first line kept)"] += 1
            continue
        parts[name] = Keypoint(x, y, visible)
    return keypoints


def _read_bboxes(cub_root: Path, skipped: Counter) -> dict[int, tuple[float, float, float, float]]:
    path = cub_root / "bounding_boxes.txt"
    boxes = {}
    if not path.is_file():
        return boxes
    for fields in _rows(path, 5, skipped):
        try:
            image_id, box = int(fields[0]), tuple(float(v) for v in fields[1:5])
        except ValueError:
            skipped["malformed line in bounding_boxes.txt"] += 1
            continue
        if image_id in boxes:
            skipped["duplicate id in bounding_boxes.txt (first line kept)"] += 1
            continue
        boxes[image_id] = box  # type: ignore[assignment]
    return boxes


def read_captions(path: Path) -> tuple[str, ...]:
    """Non-empty, stripped caption lines of one ``text_c10`` file (UTF-8, or UTF-16/32 with a byte-order mark).

    A file in another encoding raises :class:`~saywhy.data.text_files.NotUTF8Error` (``read_cub`` skips and counts it).
    """
    return tuple(line.strip() for line in read_text(path).splitlines() if line.strip())


def _upright(path: Path, bbox, keypoints: dict[str, Keypoint]):
    """CUB's box and keypoints are in the file's stored pixels; saywhy works in the upright image's
    (EXIF orientation applied, as :func:`~saywhy.data.images.open_image` does). Unchanged for untagged files."""
    if bbox is None and not keypoints:
        return bbox, keypoints
    orientation, size = stored_geometry(path)
    if orientation == 1:
        return bbox, keypoints
    bbox = None if bbox is None else upright_box(bbox, orientation, size)
    keypoints = {name: Keypoint(*upright_point(k.x, k.y, orientation, size), k.visible) for name, k in keypoints.items()}
    return bbox, keypoints


def read_cub(
    root: str | Path,
    captions: str | Path | None = None,
    require_images: bool = True,
) -> Dataset:
    """Read a CUB-200-2011-layout dataset and its captions.

    Images listed in ``images.txt`` but missing on disk (with ``require_images``), or
    lacking a class label or split, are skipped and counted in ``Dataset.skipped``;
    images without a caption file are kept with ``captions=None`` and counted.

    >>> ds = read_cub("data/CUB_200_2011")          # doctest: +SKIP
    >>> len(ds.split(train=True)), ds.skipped       # doctest: +SKIP
    (5994, {'no caption file': 0})
    """
    cub_root = find_cub_root(root)
    for name in REQUIRED_FILES:
        if not (cub_root / name).is_file():
            raise SaywhyError(f"{cub_root / name} is missing: the CUB layout needs {', '.join(REQUIRED_FILES)}")
    skipped: Counter = Counter()
    examples: dict[str, str] = {}
    images = _int_map(cub_root / "images.txt", skipped)
    class_names = _int_map(cub_root / "classes.txt", skipped)
    labels = {k: int(v) for k, v in _int_map(cub_root / "image_class_labels.txt", skipped).items() if v.isdigit()}
    split = {k: v.strip() == "1" for k, v in _int_map(cub_root / "train_test_split.txt", skipped).items()}
    part_names = _int_map(cub_root / "parts" / "parts.txt", skipped) if (cub_root / "parts" / "parts.txt").is_file() else {}
    keypoints = _read_keypoints(cub_root, part_names, skipped)
    boxes = _read_bboxes(cub_root, skipped)
    caption_root = find_caption_root(cub_root, captions)
    if caption_root is not None:
        _check_caption_folder(caption_root, class_names)

    records = []
    for image_id, rel in sorted(images.items()):
        path = cub_root / "images" / rel
        class_id = labels.get(image_id)
        if class_id is None or class_id not in class_names:
            skipped["no class label"] += 1
            continue
        if image_id not in split:
            skipped["no train/test split"] += 1
            continue
        if require_images and not path.is_file():
            skipped["image file missing"] += 1
            continue
        image_captions = None
        if caption_root is not None:
            caption_file = (caption_root / rel).with_suffix(".txt")
            if caption_file.is_file():
                try:
                    image_captions = read_captions(caption_file)
                except NotUTF8Error:  # kept without captions, like an image that has no caption file
                    skipped["caption file not UTF-8 (image kept without captions)"] += 1
                    examples.setdefault("caption file not UTF-8 (image kept without captions)", str(caption_file))
            else:
                skipped["no caption file"] += 1
        bbox, parts = boxes.get(image_id), keypoints.get(image_id, {})
        bbox, parts = _upright(path, bbox, parts)
        records.append(
            ImageRecord(
                image_id=image_id,
                path=path,
                class_id=class_id,
                is_train=split[image_id],
                bbox=bbox,
                keypoints=parts,
                captions=image_captions,
            )
        )
    if not records:
        raise SaywhyError(f"no usable images in {cub_root}: check images.txt and the images/ folder")
    for reason, count in sorted(skipped.items()):
        example = f", e.g. {examples[reason]}" if reason in examples else ""
        log.warning("%s: %d image(s) or line(s) skipped or without captions (%s%s)", cub_root, count, reason, example)
    used = {r.class_id for r in records}
    return Dataset(
        root=cub_root,
        class_names={cid: name for cid, name in class_names.items() if cid in used},
        records=records,
        part_names=part_names,
        skipped=dict(skipped),
        examples=examples,
    )


def _check_caption_folder(caption_root: Path, class_names: dict[int, str]) -> None:
    """A caption folder must have one sub-folder per class of the image list."""
    folders = {p.name for p in caption_root.iterdir() if p.is_dir()}
    if not folders & set(class_names.values()):
        raise SaywhyError(
            f"caption folder {caption_root} does not match the image list: none of its {len(folders)} "
            f"sub-folders is a class of classes.txt (e.g. {next(iter(class_names.values()), '?')}); "
            "pass the text_c10 folder that belongs to this dataset with --captions"
        )


def read_boxes(root: str | Path) -> dict[str, ImageRecord]:
    """Each image's bounding box, as a record (no class, captions or keypoints) keyed by its resolved path.

    Reads ``images.txt`` and ``bounding_boxes.txt`` alone: what a session needs to crop an
    image given by path the way its network was trained, in milliseconds where
    :func:`read_cub` reads every caption file.
    """
    cub_root = find_cub_root(root)
    skipped: Counter = Counter()
    images = _int_map(cub_root / "images.txt", skipped) if (cub_root / "images.txt").is_file() else {}
    boxes = _read_bboxes(cub_root, skipped) if (cub_root / "bounding_boxes.txt").is_file() else {}
    folder, resolved = cub_root / "images", (cub_root / "images").resolve()
    return {str(resolved / rel): ImageRecord(image_id=image_id, path=folder / rel, class_id=-1, is_train=False,
                                             bbox=boxes[image_id])
            for image_id, rel in images.items() if image_id in boxes}
