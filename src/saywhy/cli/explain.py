"""``saywhy explain IMAGE|FOLDER...``: "This is a X because it has ..." for each image.

A file that cannot be explained (missing, unreadable) is one line on stderr; the others
are still explained, and the exit status is 1 at the end if any failed.
"""
from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

from saywhy.cli.common import add_session_options, attribute_line, box, class_ref, load_session, note
from saywhy.errors import SaywhyError


class SomeFailed(SaywhyError):
    """Raised after every image was tried, when some could not be explained (their lines are already printed)."""


def register(subparsers: argparse._SubParsersAction, parents: list) -> None:
    p = subparsers.add_parser("explain", parents=parents, help="explain the network's decision for images")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files, or folders of images")
    p.add_argument("--class", dest="class_", type=class_ref, metavar="CLASS",
                   help="explain this class (index as 'describe --list' prints it, or name) instead of the predicted one")
    p.add_argument("--box", type=box, metavar="X,Y,W,H",
                   help="explain only this region of each image, in pixels: left, top, width, height")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    add_session_options(p)


def expand_images(paths: list[Path]) -> list[Path]:
    """Files as given; a folder becomes its image files, sorted by path."""
    from saywhy.apps.retrieval import list_images

    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            images.extend(list_images(path))  # refuses a folder without images, naming the suffixes
        else:
            images.append(path)
    return images


def box_options(box_value) -> dict:
    """``{"box": ...}`` for the session's explain, or a clear refusal where the library has no box yet."""
    if box_value is None:
        return {}
    from saywhy.pipeline import ExplainerSession

    if "box" not in inspect.signature(ExplainerSession.explain).parameters:
        raise SaywhyError("--box needs a saywhy whose ExplainerSession.explain accepts box=, which this one does not: "
                          "crop the image yourself, or explain the whole image without --box")
    return {"box": box_value}


def print_explanation(image: Path, explanation, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"image": str(image), **explanation.to_dict()}))
        return
    print(f"{image}: {explanation.sentence}")
    print("   " + attribute_line(explanation))


def run(args: argparse.Namespace) -> None:
    extra = box_options(args.box)
    images = expand_images(args.images)
    session = load_session(args)
    if args.class_ is not None:
        session.explainer.class_index(args.class_)  # an unknown class fails once, before any image is read
    failures: list[str] = []

    def failed(message: str) -> None:
        if len(images) == 1:
            raise SaywhyError(message)
        note(f"error: {message}")
        failures.append(message)

    present = []
    for image in images:
        if image.is_file():
            present.append(image)
        else:
            failed(f"image {image} does not exist: check the path")
    try:
        explained = dict(zip(present, session.explain(present, args.class_, **extra))) if present else {}
    except SaywhyError:  # an unreadable file among them: explain one by one to say which, and go on
        explained = {}
        for image in present:
            try:
                explained[image] = session.explain([image], args.class_, **extra)[0]
            except SaywhyError as error:
                failed(str(error))
    for image in images:  # in the order given
        if image in explained:
            print_explanation(image, explained[image], args.json)
    if failures:
        raise SomeFailed(f"{len(failures)} of {len(images)} images could not be explained (see above)")
