"""Command-line pieces for real birds: ``saywhy train --model efficientnet_lite0`` and ``saywhy data cub``.

Thin like ``cli.py``, which wires them in: parse, call the library, print.

    saywhy data cub --dest data/cub
    saywhy train --dataset cub --root data/cub --model efficientnet_lite0 --crop bbox --out models/lite0
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from saywhy.cli_common import workspace
from saywhy.errors import SaywhyError

SCRATCH_MODEL = "smallcnn"


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``saywhy train`` for pretrained networks (next to --root, --captions, --out, --crop, --seed, --image-size)."""
    parser.add_argument("--dataset", choices=["synthbirds", "cub"], default=None,
                        help="cub: the CUB-200-2011 folder given with --root (see 'saywhy data cub'); "
                             "synthbirds: --root or the demo's birds (the default without --root)")
    parser.add_argument("--model", default=SCRATCH_MODEL, metavar="NAME",
                        help="smallcnn (trained from scratch, the default); efficientnet_lite0 (ImageNet weights "
                             "installed with saywhy, no download); torchvision:NAME or timm:NAME (ImageNet weights "
                             "downloaded, or --weights); pretrained networks get a linear head fitted on frozen features")
    parser.add_argument("--weights", type=Path, metavar="PATH",
                        help="local ImageNet state dict (.pth/.safetensors) for --model, instead of downloading it")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass when computing features")
    parser.add_argument("--feature-cache", type=Path, metavar="DIR",
                        help="where pooled features are cached (default: HOME/cache/features)")


def is_pretrained(args: argparse.Namespace) -> bool:
    """Whether ``saywhy train`` should take the pretrained path (:func:`run_train_pretrained`)."""
    return getattr(args, "model", SCRATCH_MODEL) != SCRATCH_MODEL


def run_train_pretrained(args: argparse.Namespace) -> dict:
    """Fit the linear head of an ImageNet network on a CUB-layout dataset and write a checkpoint."""
    from saywhy.data.cub import read_cub
    from saywhy.model.checkpoint import save_checkpoint
    from saywhy.model.feature_cache import FeatureCache
    from saywhy.model.linear_probe import LinearProbe, ProbeConfig, fit_head
    from saywhy.model.pretrained import build_pretrained, pretrained_spec

    ws = workspace(args)
    progress = not getattr(args, "quiet", False)
    root = args.root
    if root is None:
        if args.dataset == "cub":
            raise SaywhyError("--dataset cub needs --root DIR, the CUB-200-2011 folder ('saywhy data cub --dest DIR' fetches it)")
        from saywhy.demo import ensure_synthbirds

        root = ensure_synthbirds(ws, progress=progress)
    dataset = read_cub(root, args.captions)
    spec = pretrained_spec(args.model)
    preprocess = replace(spec.preprocess, image_size=args.image_size or spec.preprocess.image_size, crop=args.crop)
    model = build_pretrained(args.model, len(dataset.class_ids), weights=args.weights or "imagenet")
    cache = FeatureCache(args.feature_cache or ws.feature_cache)
    report = fit_head(model, dataset, preprocess, cache=cache, probe=LinearProbe(config=ProbeConfig(seed=args.seed)),
                      batch_size=args.batch_size, progress=progress)
    meta = {
        "arch": spec.arch, "arch_kwargs": {},
        "classes": [dataset.class_names[c] for c in dataset.class_ids], "class_ids": dataset.class_ids,
        "preprocess": preprocess.to_dict(), "crop": args.crop, "dataset": str(Path(root).resolve()),
        "pretrained": {"name": spec.name, "weights": str(args.weights) if args.weights else spec.weights_source},
        **report,
    }
    save_checkpoint(args.out, model, meta)
    accuracy = f"{report['test_accuracy']:.1%}" if report["test_accuracy"] is not None else "n/a"
    print(f"{args.out}: test accuracy {accuracy} on {report['test_images']} images ({spec.name}, linear head on "
          f"frozen features, crop {args.crop}, {preprocess.image_size} px; features {report['feature_seconds']} s "
          f"({report['features_computed']} computed, {report['features_cached']} cached), head {report['train_seconds']} s)")
    return meta


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``saywhy data cub`` (next to --dest)."""
    parser.add_argument("--archives", type=Path, metavar="DIR",
                        help="cub: folder holding CUB_200_2011.tgz and cvpr2016_cub.tar.gz downloaded by hand")
    parser.add_argument("--no-captions", action="store_true", help="cub: skip Reed et al.'s captions (text_c10)")
    parser.add_argument("--keep-archives", action="store_true", help="cub: keep the downloaded archives after unpacking")


def run_data_cub(args: argparse.Namespace) -> None:
    """Download, verify and unpack CUB-200-2011 and its captions into ``--dest``."""
    from saywhy.data.download import download_cub

    report = download_cub(args.dest, archives=args.archives, captions=not args.no_captions,
                          keep_archives=args.keep_archives, progress=not getattr(args, "quiet", False))
    for name, what in report.steps:
        print(f"{name}: {what}")
    print(f"next: saywhy train --dataset cub --root {report.root} --model efficientnet_lite0 --crop bbox --out DIR")
