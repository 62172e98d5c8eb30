"""``saywhy demo``: synthbirds + small CNN, generated, trained, fitted (cached) and explained."""
from __future__ import annotations

import argparse
import random
import time

from saywhy.cli.common import add_command, add_device_options, on_device, attribute_line, class_line, int_at_least, progress, workspace


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "demo",
                    help="synthbirds + small CNN: generate, train, fit and explain (cached)")
    p.add_argument("--images", type=int_at_least(1), default=6, help="test images to explain (default 6)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="which test images are drawn")
    add_device_options(p)


def run(args: argparse.Namespace) -> None:
    from saywhy.demo import ensure_demo
    from saywhy.pipeline import ExplainerSession

    started = time.perf_counter()
    art = ensure_demo(workspace(args), progress=progress(args))
    session = ExplainerSession(art.explainer, on_device(args, art.model))
    test = art.dataset.split(train=False)
    rng = random.Random(args.seed)
    chosen = rng.sample(test, min(args.images, len(test)))
    acc = art.model_meta.get("test_accuracy")
    print(f"saywhy demo: synthbirds, {len(art.dataset.class_ids)} species, small CNN "
          f"(test accuracy {acc:.1%}), {len(art.explainer.vocabulary_)} caption attributes\n")
    for record, explanation in zip(chosen, session.explain(chosen)):
        truth = art.explainer.readable_name(art.dataset.class_index(record.class_id))
        mark = "right" if explanation.class_name == truth else f"wrong, truly {truth}"
        print(f"{record.path.name} ({mark})\n  {explanation.sentence}")
        print("  top attributes, " + attribute_line(explanation))
        print("  class, " + class_line(explanation))
    pair = art.truth.get("confusable_pairs", [None])[0]
    if pair:
        candidates = [r for r in test if r.class_id == pair["a"]]
        record = rng.choice(candidates)
        contrast = session.contrast(record, art.dataset.class_index(pair["b"]),
                                    class_=art.dataset.class_index(pair["a"]))
        print(f"\nwhy not its look-alike? {record.path.name}\n  {contrast.sentence}")
        print(f"  {contrast.explanation.sentence}\n  {contrast.other.sentence}")
    print(f"\nexplainer: {art.explainer_path} ({time.perf_counter() - started:.1f} s)")
    print("next: saywhy explain IMAGE, saywhy contrast IMAGE --vs CLASS, saywhy describe CLASS")
