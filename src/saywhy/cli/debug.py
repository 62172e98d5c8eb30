"""``saywhy debug``: explain every misclassified test image (Figure 8) as debug.json and debug.html."""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.cli.common import (add_command, add_dataset_options, add_device_options, add_session_options, dataset_and_session,
                               int_at_least, progress, skip_summary)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "debug", help="explain every misclassified test image (Figure 8)")
    add_dataset_options(p, "the explainer's own")
    p.add_argument("--out", type=Path, default=Path("saywhy-debug"),
                   help="folder for debug.json and debug.html (default ./saywhy-debug)")
    p.add_argument("--top-k", type=int_at_least(1), default=3,
                   help="separating attributes per side of each contrast (default 3)")
    p.add_argument("--link-images", action="store_true", help="link images by path instead of embedding thumbnails")
    add_session_options(p)
    add_device_options(p)


def run(args: argparse.Namespace) -> None:
    from saywhy.apps.debugging import debug_network
    from saywhy.render.debug_page import write_debug_report

    dataset, session, _ = dataset_and_session(args)
    report = debug_network(session, dataset, k=args.top_k, progress=progress(args))
    json_path, html_path = write_debug_report(report, args.out, thumbnails=not args.link_images)
    print(report.summary())
    for pair in report.confused_pairs[:5]:
        print(f"  {pair['count']:3d}  {pair['true']} -> {pair['predicted']}")
    if report.misleading_attributes:
        print("most misleading attributes: " + ", ".join(f"{t} ({n})" for t, n in report.misleading_attributes[:5]))
    print(f"wrote {json_path} and {html_path}")
    skip_summary(args, {**dataset.skipped, **report.skipped}, dataset.examples)
