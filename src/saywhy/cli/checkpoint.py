"""``saywhy checkpoint import``: a network trained elsewhere becomes a saywhy checkpoint.

    saywhy checkpoint import --arch torchvision:resnet50 --weights birds.pth --classes classes.txt --out models/birds

The architecture is rebuilt by name, the state dict loaded strictly, the head checked for
exactness, and the preprocessing (size, normalization, crop) stored, so that ``fit`` and
``explain`` prepare images the way the network was trained.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from saywhy.cli.common import add_command, finite_float, int_at_least
from saywhy.errors import SaywhyError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "checkpoint", help="make a checkpoint from a network trained elsewhere")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = actions.add_parser("import", help="torchvision/timm architecture + state dict (.pth, .safetensors) -> checkpoint")
    q.add_argument("--arch", required=True, help="torchvision:NAME, timm:NAME or saywhy:smallcnn")
    q.add_argument("--weights", type=Path, required=True, help="state dict file (.pth/.pt or .safetensors)")
    q.add_argument("--classes", type=Path, required=True,
                   help="text file with one class name per line, in the order of the head's outputs")
    q.add_argument("--arch-kwargs", default="{}", help="JSON of constructor arguments besides the class count")
    q.add_argument("--image-size", type=int_at_least(8), help="input pixels (default: the architecture's own)")
    q.add_argument("--mean", type=finite_float, nargs=3, metavar=("R", "G", "B"), help="normalization mean")
    q.add_argument("--std", type=finite_float, nargs=3, metavar=("R", "G", "B"), help="normalization std")
    q.add_argument("--crop", choices=["none", "bbox"], default="none",
                   help="bbox if the network was trained on bounding-box crops")
    q.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")


def run(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from saywhy.model.checkpoint import import_checkpoint

    try:
        arch_kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError as error:
        raise SaywhyError(f"--arch-kwargs is not JSON ({error.msg}): give an object such as '{{\"width\": 2}}'") from None
    if not isinstance(arch_kwargs, dict):
        raise SaywhyError("--arch-kwargs must be a JSON object such as '{\"width\": 2}'")
    if not args.classes.is_file():
        raise SaywhyError(f"class list {args.classes} does not exist: one class name per line")
    classes = [line.strip() for line in args.classes.read_text().splitlines() if line.strip()]
    base = _default_preprocess(args.arch)
    preprocess = replace(base, image_size=args.image_size or base.image_size, crop=args.crop,
                         mean=tuple(args.mean) if args.mean else base.mean, std=tuple(args.std) if args.std else base.std)
    out = import_checkpoint(args.out, arch=args.arch, weights=args.weights, classes=classes, preprocess=preprocess,
                            arch_kwargs=arch_kwargs)
    print(f"{out}: {args.arch}, {len(classes)} classes, {preprocess.image_size} px, crop {preprocess.crop}")


def _default_preprocess(arch: str):
    from saywhy.data.images import Preprocess
    from saywhy.model.pretrained import pretrained_spec

    if arch.startswith(("torchvision:", "timm:")):
        return pretrained_spec(arch).preprocess
    return Preprocess()
