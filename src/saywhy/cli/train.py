"""``saywhy train``: train the small CNN, or fit a pretrained network's linear head, and write a checkpoint.

    saywhy train --root DIR --out CKPT                       # the small CNN, from scratch
    saywhy train --dataset cub --root data/cub --arch efficientnet_lite0 --crop bbox --out models/lite0
"""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.cli.common import add_command, add_strict_option, int_at_least, progress, skip_summary, strict_check, workspace
from saywhy.errors import SaywhyError

SCRATCH_ARCH = "smallcnn"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "train",
                    help="train the small CNN, or fit a pretrained network's head, on a CUB-layout dataset")
    p.add_argument("--root", type=Path, help="dataset folder (default: the demo's synthbirds)")
    p.add_argument("--captions", type=Path, help="text_c10 folder if not beside the images")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    p.add_argument("--epochs", type=int_at_least(1), default=12, help="small CNN: training epochs (default 12)")
    p.add_argument("--image-size", type=int_at_least(8), default=None,
                   help="input pixels (default: 64 for smallcnn, the network's own otherwise)")
    p.add_argument("--crop", choices=["none", "bbox"], default="none", help="crop to the bounding box (the paper's setting)")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    add_strict_option(p)
    add_train_options(p)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``saywhy train`` for pretrained networks (next to --root, --captions, --out, --crop, --seed, --image-size)."""
    parser.add_argument("--dataset", choices=["synthbirds", "cub"], default=None,
                        help="cub: the CUB-200-2011 folder given with --root (see 'saywhy data cub'); "
                             "synthbirds: --root or the demo's birds (the default without --root)")
    parser.add_argument("--arch", default=SCRATCH_ARCH, metavar="NAME",
                        help="smallcnn (trained from scratch, the default); efficientnet_lite0 (ImageNet weights "
                             "installed with saywhy, no download); torchvision:NAME or timm:NAME (ImageNet weights "
                             "downloaded, or --weights); pretrained networks get a linear head fitted on frozen features")
    parser.add_argument("--weights", type=Path, metavar="PATH",
                        help="local ImageNet state dict (.pth/.safetensors) for --arch, instead of downloading it")
    parser.add_argument("--batch-size", type=int_at_least(1), default=32,
                        help="images per forward pass when computing features (default 32)")
    parser.add_argument("--feature-cache", type=Path, metavar="DIR",
                        help="where pooled features are cached (default: HOME/cache/features)")
    parser.add_argument("--finetune", action="store_true",
                        help="pretrained --arch: also train the network's last stage(s), conv_head and head (the lower "
                             "layers frozen and their output cached, flip augmentation, early stopping on 15%% of the "
                             "training images) instead of only a linear head on frozen features")
    parser.add_argument("--finetune-stages", type=int_at_least(1), default=1, metavar="K",
                        help="--finetune: how many of the last stages to train (default 1: for EfficientNet-Lite0 the "
                             "last stage at 7x7; 2 costs about 4x as much per epoch, BENCHMARKS.md)")
    parser.add_argument("--finetune-epochs", type=int_at_least(1), default=30, metavar="N",
                        help="--finetune: most epochs (default 30; training stops earlier when held-out accuracy stalls)")


def is_pretrained(args: argparse.Namespace) -> bool:
    """Whether ``saywhy train`` takes the pretrained path (:func:`run_train_pretrained`)."""
    return getattr(args, "arch", SCRATCH_ARCH) != SCRATCH_ARCH


def run(args: argparse.Namespace) -> None:
    from saywhy.files import check_replaceable

    check_replaceable(args.out, "checkpoint")  # before minutes of training, not after
    if getattr(args, "finetune", False) and not is_pretrained(args):
        raise SaywhyError("--finetune trains the last stages of a pretrained network: add --arch efficientnet_lite0 "
                          "(or timm:NAME of an EfficientNet)")
    if is_pretrained(args):
        run_train_pretrained(args)
        return
    from saywhy.data.cub import read_cub
    from saywhy.data.images import Preprocess
    from saywhy.demo import ensure_synthbirds, train_demo_model
    from saywhy.model.train import TrainConfig

    root = args.root or ensure_synthbirds(workspace(args), progress=progress(args))
    dataset = read_cub(root, args.captions)
    strict_check(args, dataset, args.crop)
    fingerprint_file = Path(root) / ".synthbirds_fingerprint"
    _, meta = train_demo_model(dataset, fingerprint_file.read_text().strip() if fingerprint_file.is_file() else None,
                               args.out, TrainConfig(epochs=args.epochs, seed=args.seed),
                               Preprocess(image_size=args.image_size or 64, crop=args.crop), progress=progress(args),
                               dataset_name=str(root))
    accuracy = f"{meta['test_accuracy']:.1%}" if meta["test_accuracy"] is not None else "n/a"  # no test images
    print(f"{args.out}: test accuracy {accuracy} on {meta['test_images']} images "
          f"({meta['train_seconds']} s)")
    skip_summary(args, {**dataset.skipped, "unreadable images": meta.get("unreadable_images", 0)}, dataset.examples)


def run_train_pretrained(args: argparse.Namespace) -> dict:
    """Fit the linear head of an ImageNet network (``args.arch``) on a CUB-layout dataset and write a checkpoint."""
    from saywhy.model.pretrained import train_pretrained_head

    ws = workspace(args)
    show = progress(args)
    root = args.root
    if root is None:
        if args.dataset == "cub":
            raise SaywhyError("--dataset cub needs --root DIR, the CUB-200-2011 folder ('saywhy data cub --dest DIR' fetches it)")
        from saywhy.demo import ensure_synthbirds

        root = ensure_synthbirds(ws, progress=show)
    from saywhy.data.cub import read_cub

    dataset = read_cub(root, args.captions)  # what the run skips, for the summary (and --strict, before any work)
    strict_check(args, dataset, args.crop)
    if getattr(args, "finetune", False):
        return _run_finetune(args, root, ws, show, dataset)
    _, meta = train_pretrained_head(args.arch, root, args.out, captions=args.captions, crop=args.crop,
                                    image_size=args.image_size, weights=args.weights, seed=args.seed,
                                    batch_size=args.batch_size, feature_cache=args.feature_cache or ws.feature_cache,
                                    progress=show)
    accuracy = f"{meta['test_accuracy']:.1%}" if meta["test_accuracy"] is not None else "n/a"
    print(f"{args.out}: test accuracy {accuracy} on {meta['test_images']} images ({meta['pretrained']['name']}, "
          f"linear head on frozen features, crop {args.crop}, {meta['preprocess']['image_size']} px; features "
          f"{meta['feature_seconds']} s ({meta['features_computed']} computed, {meta['features_cached']} cached), "
          f"head {meta['train_seconds']} s)")
    skip_summary(args, {**dataset.skipped, "unreadable images": meta.get("unreadable_images", 0)}, dataset.examples)
    return meta


def _run_finetune(args: argparse.Namespace, root: Path, ws, show: bool, dataset) -> dict:
    from saywhy.model.finetune import FinetuneConfig, train_finetuned

    config = FinetuneConfig(stages=args.finetune_stages, max_epochs=args.finetune_epochs, seed=args.seed)
    _, meta = train_finetuned(args.arch, root, args.out, captions=args.captions, crop=args.crop,
                              image_size=args.image_size, weights=args.weights, config=config,
                              feature_cache=args.feature_cache or ws.feature_cache, progress=show)
    training = meta["training"]
    accuracy = f"{meta['test_accuracy']:.1%}" if meta["test_accuracy"] is not None else "n/a"
    print(f"{args.out}: test accuracy {accuracy} on {meta['test_images']} images ({meta['pretrained']['name']}, "
          f"fine-tuned from {training['frozen_below']} up, best held-out epoch {training['best_epoch']} of "
          f"{training['epochs_run']} ({training['held_out_accuracy']:.1%} on {training['held_out_images']} held-out "
          f"training images); frozen layers {meta['feature_seconds']} s ({meta['features_computed']} images computed, "
          f"{meta['features_cached']} cached), training {meta['train_seconds']} s)")
    skip_summary(args, {**dataset.skipped, "unreadable images": meta.get("unreadable_images", 0)}, dataset.examples)
    return meta
