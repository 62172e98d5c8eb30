"""The ``search`` and ``debug`` sub-commands: parse, call the library, print or write.

``saywhy/cli.py`` wires them in with :func:`register` and dispatches to
:func:`run_search` and :func:`run_debug`; errors are SaywhyErrors, printed by ``cli.main``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from saywhy.cli_common import add_session_options, dataset_and_session, load_session
from saywhy.errors import SaywhyError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``search`` and ``debug`` to the ``saywhy`` sub-command parsers."""
    p = subparsers.add_parser("search", help="rank images by the probability that they show attributes (Figure 6)")
    p.add_argument("attributes", nargs="+", help='"adjective noun" attributes, e.g. "white eyebrow" "black throat"')
    p.add_argument("--images", type=Path,
                   help="folder of images to search (default: the test images of the explainer's dataset)")
    p.add_argument("--top", type=int, default=20, help="how many ranked images to print (default 20)")
    p.add_argument("--sheet", type=Path, help="also write a contact sheet of the top images (PNG or JPEG)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_session_options(p)

    p = subparsers.add_parser("debug", help="explain every misclassified test image (Figure 8)")
    p.add_argument("--root", type=Path, help="CUB-layout dataset folder (default: the demo's synthbirds)")
    p.add_argument("--captions", type=Path, help="text_c10 folder if not beside the images")
    p.add_argument("--out", type=Path, default=Path("saywhy-debug"),
                   help="folder for debug.json and debug.html (default ./saywhy-debug)")
    p.add_argument("--k", type=int, default=3, help="separating attributes per side of each contrast (default 3)")
    p.add_argument("--link-images", action="store_true", help="link images by path instead of embedding thumbnails")
    add_session_options(p)


def run_search(args: argparse.Namespace) -> None:
    """``saywhy search ATTRIBUTE... [--images DIR] [--top N] [--sheet FILE]``."""
    from saywhy.apps.retrieval import list_images, query_indices, search_images

    if args.top < 1:
        raise SaywhyError(f"--top must be at least 1, got {args.top}")
    session = load_session(args)
    query_indices(session.explainer, args.attributes)  # an unknown attribute fails before any image is read
    if args.images:
        items = list_images(args.images)
    else:
        from saywhy.data.cub import read_cub

        root = session.explainer.metadata_.get("dataset_root")
        if not root or not Path(root).is_dir():
            raise SaywhyError("the explainer's dataset is not at hand: pass --images DIR")
        items = read_cub(root).split(train=False)
    result = search_images(session, items, args.attributes, top=args.top)
    if args.sheet:
        from saywhy.render.contact_sheet import contact_sheet

        contact_sheet([(h.path, f"{h.rank}. {h.score:.3g}{' *' if h.in_explanation else ''}\n{h.predicted_class}")
                       for h in result.hits], args.sheet, title=" + ".join(result.query))
    if args.json:
        print(json.dumps(result.to_dict()))
        return
    unreadable = f", {result.n_unreadable} unreadable skipped" if result.n_unreadable else ""
    print(f"query: {' + '.join(result.query)}; score = sum of log p(attribute | image, predicted class); "
          f"* = all in the top-{result.top_k} explanation ({result.n_in_explanation} of {result.n_images} images"
          f"{unreadable})")
    for hit in result.hits:
        print(f"{hit.rank:4d}  {hit.log_score:.4g}  {'*' if hit.in_explanation else ' '}  {hit.path}  ({hit.predicted_class})")
    if args.sheet:
        print(f"contact sheet: {args.sheet}")


def run_debug(args: argparse.Namespace) -> None:
    """``saywhy debug [--root DIR] [--out FOLDER]``: write debug.json and debug.html."""
    from saywhy.apps.debugging import debug_network
    from saywhy.render.debug_page import write_debug_report

    if args.k < 1:
        raise SaywhyError(f"--k must be at least 1, got {args.k}")
    progress = not getattr(args, "quiet", False)
    dataset, session, _ = dataset_and_session(args)
    report = debug_network(session, dataset, k=args.k, progress=progress)
    json_path, html_path = write_debug_report(report, args.out, thumbnails=not args.link_images)
    print(report.summary())
    for pair in report.confused_pairs[:5]:
        print(f"  {pair['count']:3d}  {pair['true']} -> {pair['predicted']}")
    if report.misleading_attributes:
        print("most misleading attributes: " + ", ".join(f"{t} ({n})" for t, n in report.misleading_attributes[:5]))
    print(f"wrote {json_path} and {html_path}")
