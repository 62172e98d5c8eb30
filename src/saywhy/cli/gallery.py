"""``saywhy gallery``: the paper's Figures 3, 1 and 8 as one self-contained HTML page."""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.cli.common import (add_command, add_dataset_options, add_device_options, add_session_options, dataset_and_session,
                               int_at_least, progress, skip_summary)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "gallery",
                    help="explained test images, a misclassification and failures as HTML (Figures 3, 1 and 8)")
    add_dataset_options(p, "the explainer's own")
    p.add_argument("--out", type=Path, default=Path("saywhy-gallery"),
                   help="folder for index.html, gallery.json and figure1_cam.png (default ./saywhy-gallery)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="which test images are drawn (the same draw as 'saywhy demo')")
    add_session_options(p)
    add_device_options(p)


def run(args: argparse.Namespace) -> None:
    from saywhy.apps.gallery import build_gallery
    from saywhy.render.gallery import write_gallery

    dataset, session, _ = dataset_and_session(args)
    gallery = build_gallery(session, dataset, seed=args.seed, progress=progress(args))
    json_path, html_path = write_gallery(gallery, args.out)
    print(f"Figure 3: {sum(s.correct for s in gallery.samples)} of {len(gallery.samples)} drawn images right")
    print(f"Figure 1: {gallery.figure1.contrast}")
    print(f"Figure 8: {gallery.debug_summary}")
    print(f"wrote {html_path} and {json_path}")
    skip_summary(args, {**dataset.skipped, **gallery.skipped}, dataset.examples)
