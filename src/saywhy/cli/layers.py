"""``saywhy layers CKPT``: the (feature layer, head) pairs saywhy found in a checkpoint, and which it explains.

A pair is exact when the head applied to the layer's average-pooled map gives the
network's logits (:func:`saywhy.model.layers.layer_candidates`); only an exact pair can be
explained, and ``saywhy fit`` refuses a network without one.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.cli.common import add_command, add_device_options, network_device


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "layers", help="list the layers and heads of a checkpoint that saywhy can explain")
    p.add_argument("checkpoint", type=Path, metavar="CKPT", help="checkpoint folder ('saywhy train' or 'saywhy checkpoint import')")
    p.add_argument("--layer", help="check this feature layer (default: chosen automatically)")
    p.add_argument("--head", help="check this linear head (default: chosen automatically)")
    p.add_argument("--all", action="store_true", help="also list candidates that are not exact")
    add_device_options(p)


def run(args: argparse.Namespace) -> None:
    import torch

    from saywhy.model.checkpoint import checkpoint_preprocess, load_checkpoint
    from saywhy.model.layers import find_layers, layer_candidates

    device = network_device(args)
    model, meta = load_checkpoint(args.checkpoint, map_location=device)
    size = checkpoint_preprocess(meta).image_size
    example = torch.zeros(1, 3, size, size, device=torch.device(device))
    candidates = layer_candidates(model, example)
    shown = [c for c in candidates if c.exact or args.all]
    for candidate in shown:
        print(("exact  " if candidate.exact else "       ") + candidate.describe())
    if len(shown) < len(candidates):
        print(f"({len(candidates) - len(shown)} candidates that are not exact; --all lists them)")
    choice = find_layers(model, example, args.layer, args.head)  # the one-line refusal when nothing is exact
    print(f"saywhy explains: feature layer {choice.feature_layer!r} ({choice.n_filters} filters) "
          f"-> head {choice.head!r} ({choice.n_classes} classes)")
