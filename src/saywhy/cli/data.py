"""``saywhy data``: generate synthbirds, or download CUB-200-2011 and its captions."""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.cli.common import add_command, float_in, int_at_least, progress


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "data", help="generate or fetch a dataset")
    p.add_argument("name", choices=["synthbirds", "cub"], help="synthbirds: generate; cub: download CUB-200-2011 + captions")
    p.add_argument("--dest", type=Path, required=True, help="folder to write")
    p.add_argument("--n-images", type=int_at_least(1), default=3000, help="synthbirds: images (default 3000)")
    p.add_argument("--image-size", type=int_at_least(8), default=128, help="synthbirds: pixels (default 128)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="synthbirds: seed")
    p.add_argument("--label-noise", type=float_in(0, 1, high_open=True), default=0.0,
                   help="synthbirds: share of wrong labels, in [0, 1) (CUB has about 0.04)")
    add_data_options(p)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``saywhy data cub`` (next to --dest)."""
    parser.add_argument("--archives", type=Path, metavar="DIR",
                        help="cub: folder holding CUB_200_2011.tgz and cvpr2016_cub.tar.gz downloaded by hand")
    parser.add_argument("--no-captions", action="store_true", help="cub: skip Reed et al.'s captions (text_c10)")
    parser.add_argument("--keep-archives", action="store_true", help="cub: keep the downloaded archives after unpacking")


def run(args: argparse.Namespace) -> None:
    if args.name == "cub":
        run_data_cub(args)
        return
    from saywhy.data.synthbirds import SynthConfig, generate

    config = SynthConfig(n_images=args.n_images, image_size=args.image_size, seed=args.seed, label_noise=args.label_noise)
    print(generate(args.dest, config, progress=progress(args)))


def run_data_cub(args: argparse.Namespace) -> None:
    """Download, verify and unpack CUB-200-2011 and its captions into ``--dest``."""
    from saywhy.data.download import download_cub

    report = download_cub(args.dest, archives=args.archives, captions=not args.no_captions,
                          keep_archives=args.keep_archives, progress=progress(args))
    for name, what in report.steps:
        print(f"{name}: {what}")
    print(f"next: saywhy train --dataset cub --root {report.root} --arch efficientnet_lite0 --crop bbox --out DIR")
