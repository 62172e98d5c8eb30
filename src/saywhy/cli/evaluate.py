"""``saywhy evaluate``: the paper's Tables 1-3, faithfulness and debugging, each beside baselines."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from saywhy.cli.common import (add_command, add_dataset_options, add_device_options, add_session_options, dataset_and_session,
                               int_at_least, progress, skip_summary, workspace)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "evaluate",
                    help="the paper's Tables 1-3, faithfulness and debugging, each beside baselines")
    add_dataset_options(p, "the explainer's own")
    p.add_argument("--name", help="name of the result files (default: the dataset folder's name, synthbirds for the demo)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for NAME_eval.json and NAME_eval.md")
    p.add_argument("--grounding-source", choices=["captions", "truth"], default="captions",
                   help="ground each image's caption attributes (the paper) or its true attributes (synthbirds)")
    p.add_argument("--grounding-size", type=int_at_least(8), help="network input size for grounding only (default: the model's own)")
    p.add_argument("--ablation", action="store_true", help="also compare, on the same images, the paper's exact method and each of saywhy's choices (ablation_configs)")
    p.add_argument("--occlusion-images", type=int_at_least(0), default=150,
                   help="seeded sample of captioned test images for the occlusion test (0: skip it)")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    add_session_options(p)
    add_device_options(p)


def run(args: argparse.Namespace) -> None:
    from saywhy.evaluate import ablation, ablation_configs, evaluate, grounding_ablation, markdown, record_sample
    from saywhy.text.phrases import PhraseExtractor

    ws = workspace(args)
    dataset, session, truth = dataset_and_session(args)
    from saywhy.pipeline import SpilledMaps

    # one forward pass per image for every ablation row, its maps on disk (memory stays flat)
    session.map_memo = SpilledMaps() if args.ablation else None
    name = args.name or (args.root.name if args.root else _dataset_name(dataset.root))
    extractor = PhraseExtractor(cache_dir=ws.phrase_cache, progress=progress(args))
    result = evaluate(session, dataset, extractor, truth, args.seed, args.grounding_source,
                      grounding_size=args.grounding_size, occlusion_images=args.occlusion_images)
    result["sample"] = record_sample(session, dataset, dataset.split(train=False), seed=args.seed)
    if args.ablation:
        result["ablation"] = ablation(session, dataset, extractor, ablation_configs(), truth, args.seed)
        result["grounding_ablation"] = grounding_ablation(session, dataset, extractor, truth, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}_eval.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out / f"{name}_eval.md").write_text(markdown(result, f"{name}: saywhy evaluate"))
    print(markdown(result, f"{name}: saywhy evaluate"))
    print(f"wrote {args.out / f'{name}_eval.json'} and {args.out / f'{name}_eval.md'}")
    skip_summary(args, {**dataset.skipped, "unreadable test images": result["unreadable"], **extractor.skipped},
                 dataset.examples)


def _dataset_name(root: Path) -> str:
    """The folder above CUB_200_2011 (or the folder itself); synthbirds for the demo's fingerprinted folders."""
    root = Path(root)
    folder = root.parent if root.name == "CUB_200_2011" else root
    return "synthbirds" if folder.name.startswith("synthbirds") else folder.name
