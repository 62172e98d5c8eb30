"""``saywhy gallery``: the paper's Figures 3, 1 and 8 as one self-contained HTML page.

Thin, like the rest of the CLI: parse, call :func:`saywhy.render.gallery.build_gallery`,
write, print. Wired into ``saywhy/cli.py`` by ``register(subparsers)`` and
``COMMANDS["gallery"] = run_gallery``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.cli_common import add_session_options, dataset_and_session


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``gallery`` sub-command to ``saywhy``'s sub-parsers."""
    p = subparsers.add_parser("gallery", help="explained test images, a misclassification and failures as HTML "
                                              "(Figures 3, 1 and 8)")
    p.add_argument("--root", type=Path, help="CUB-layout dataset folder (default: the demo's synthbirds)")
    p.add_argument("--captions", type=Path, help="text_c10 folder if not beside the images")
    p.add_argument("--out", type=Path, default=Path("saywhy-gallery"),
                   help="folder for index.html, gallery.json and figure1_cam.png (default ./saywhy-gallery)")
    p.add_argument("--seed", type=int, default=0, help="which test images are drawn (the same draw as 'saywhy demo')")
    add_session_options(p)
    return p


def run_gallery(args: argparse.Namespace) -> None:
    """``saywhy gallery [--root DIR] [--out DIR] [--seed N]``: write the page and say where."""
    from saywhy.apps.gallery import build_gallery
    from saywhy.render.gallery import write_gallery

    progress = not getattr(args, "quiet", False)
    dataset, session, _ = dataset_and_session(args)
    gallery = build_gallery(session, dataset, seed=args.seed, progress=progress)
    json_path, html_path = write_gallery(gallery, args.out)
    print(f"Figure 3: {sum(s.correct for s in gallery.samples)} of {len(gallery.samples)} drawn images right")
    print(f"Figure 1: {gallery.figure1.contrast}")
    print(f"Figure 8: {gallery.debug_summary}")
    print(f"wrote {html_path} and {json_path}")
