"""``saywhy extract --shard K/N``: one part of a fit's network and caption work, for ``fit --from-shards``.

Run it N times (K = 0 .. N-1, on as many machines as you like, each with its own feature
cache), then ``saywhy fit --model M --from-shards DIR_0 ... DIR_N-1 --out EXP``: the
explainer is the one ``saywhy fit --root`` would fit (eq. 1-4's statistics bit for bit).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.cli.common import add_command, progress, workspace
from saywhy.cli.fit import add_data_options, fit_data
from saywhy.errors import SaywhyError


def _shard(text: str) -> tuple[int, int]:
    from saywhy.shards import parse_shard

    try:
        return parse_shard(text)
    except SaywhyError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "extract",
                    help="features and caption statistics of one shard of the fitting images (for fit --from-shards)")
    add_data_options(p)
    p.add_argument("--shard", type=_shard, required=True, metavar="K/N", help="which part: K of N, 0 <= K < N")
    p.add_argument("--out", type=Path, required=True, help="shard folder to write")


def run(args: argparse.Namespace) -> None:
    from saywhy.files import check_replaceable
    from saywhy.model.checkpoint import checkpoint_preprocess, load_checkpoint
    from saywhy.model.feature_cache import FeatureCache
    from saywhy.shards import extract_part, write_shard

    check_replaceable(args.out, "shard")
    ws = workspace(args)
    model, meta = load_checkpoint(args.model)
    dataset, source, extractor = fit_data(args, ws)
    k, n = args.shard
    part = extract_part(dataset, model, checkpoint_preprocess(meta), k, n, source, extractor, args.layer, args.head,
                        FeatureCache(ws.feature_cache), progress(args), meta.get("classes"))
    write_shard(part, args.out)
    print(f"{args.out}: shard {k}/{n}, {part.meta['images']} of {part.meta['fitting_images']} fitting images"
          + (f" ({part.meta['unreadable']} unreadable)" if part.meta["unreadable"] else ""))
