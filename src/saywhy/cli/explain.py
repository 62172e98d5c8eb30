"""``saywhy explain IMAGE|FOLDER...``: "This is a X because it has ..." for each image.

A file that cannot be explained (missing, unreadable) is one line on stderr; the others
are still explained, and the exit status is 1 at the end if any failed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from saywhy.cli.common import (
    add_command,
    add_device_options,
    add_session_options,
    attribute_line,
    box,
    class_line,
    class_ref,
    load_session,
    note,
)
from saywhy.errors import SaywhyError


class SomeFailed(SaywhyError):
    """Raised after every image was tried, when some could not be explained (their lines are already printed)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "explain", help="explain the network's decision for images")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files, or folders of images")
    p.add_argument("--class", dest="class_", type=class_ref, metavar="CLASS",
                   help="explain this class (index as 'describe --list' prints it, or name) instead of the predicted one")
    p.add_argument("--box", type=box, metavar="X,Y,W,H",
                   help="explain only this region of each image, in pixels: left, top, width, height "
                        "(default: the dataset's box for a network trained on box crops, else the whole image)")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    add_session_options(p)
    add_device_options(p)


def print_explanation(image: Path, explanation, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"image": str(image), **explanation.to_dict()}))
        return
    print(f"{image}: {explanation.sentence}")
    print("   " + attribute_line(explanation))
    print("   " + class_line(explanation))
    for text in explanation.notes:
        print(f"   note: {text}")


def run(args: argparse.Namespace) -> None:
    from saywhy.data.images import crop_to_box, open_image
    from saywhy.data.inputs import list_images

    extra = {} if args.box is None else {"box": args.box}
    session = load_session(args)
    if args.class_ is not None:
        session.explainer.class_index(args.class_)  # an unknown class fails once, before any image is read
    single = len(args.images) == 1 and not args.images[0].is_dir()
    failures: list[str] = []

    def failed(message: str) -> None:
        if single:
            raise SaywhyError(message)
        note(f"error: {message}")
        failures.append(message)

    images: list[Path] = []  # files as given; a folder becomes its image files, sorted by path
    for path in args.images:
        if path.is_dir():
            try:
                images.extend(list_images(path))
            except SaywhyError as error:  # a folder without images
                failed(str(error))
        elif path.is_file():
            images.append(path)
        else:
            try:
                open_image(path)  # says why: no such file, or a link that leads nowhere
            except SaywhyError as error:
                failed(str(error))
    tried = len(images) + len(failures)
    # one pass over every image; an unreadable one is left out, and opening it again says why
    found = {Path(e.input).resolve(): e for e in session.explain(images, args.class_, strict=False, **extra)} \
        if images else {}
    explained = {image: found[image.resolve()] for image in images if image.resolve() in found}
    for image in images:
        if image not in explained:
            try:
                opened = open_image(image)
                if args.box is not None:
                    crop_to_box(opened, args.box)  # says why: the box selects no pixel of this image
            except SaywhyError as error:
                failed(f"image {image}: {error}" if args.box is not None and str(image) not in str(error) else str(error))
            else:
                failed(f"image {image} could not be explained")
    for image in images:  # in the order given
        if image in explained:
            print_explanation(image, explained[image], args.json)
    if failures:
        raise SomeFailed(f"{len(failures)} of {tried} images could not be explained (see above)")
