"""``saywhy contrast IMAGE --vs CLASS``: why the predicted class and not another (Figure 1)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from saywhy.cli.common import add_device_options, add_command, add_session_options, box, class_ref, load_session


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "contrast", help="why the predicted class and not another (Figure 1)")
    p.add_argument("image", type=Path)
    p.add_argument("--vs", required=True, type=class_ref, metavar="CLASS",
                   help="the other class (index as 'describe --list' prints it, or name)")
    p.add_argument("--as", dest="as_", type=class_ref, metavar="CLASS", help="the class to defend (default: predicted)")
    p.add_argument("--box", type=box, metavar="X,Y,W,H", help="contrast on this region of the image only, in pixels")
    p.add_argument("--json", action="store_true")
    add_session_options(p)
    add_device_options(p)


def run(args: argparse.Namespace) -> None:
    session = load_session(args)
    contrast = session.contrast(args.image, args.vs, args.as_, box=args.box)
    if args.json:
        print(json.dumps({"image": str(args.image), **contrast.to_dict()}))
        return
    print(contrast.sentence)
    print(f"  {contrast.explanation.sentence}\n  {contrast.other.sentence}")
