"""Benchmark: a linear head on frozen EfficientNet-Lite0 features, on real CUB birds (cub50).

Runs what ``saywhy train --dataset cub --root ROOT --arch efficientnet_lite0 --crop bbox``
runs, twice: once with an empty feature cache (every image through the network) and
once with it filled (only the head is fitted again). Reports test accuracy, the time to
compute features and the time to fit the head, on whatever machine runs it.

``--compare-padding`` also fits the head on timm's ``efficientnet_lite0`` (symmetric
padding, BN eps 1e-5) holding the very same tensors, and compares ImageNet top-1 classes
of the two on every image: the evidence for using ``tf_efficientnet_lite0``.
``--whole`` adds the same run on whole images (no bounding-box crop).

Run:  .venv/bin/python benchmarks/cub50_train.py [--root ../shared/data/cub50] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from saywhy.model.pretrained import train_pretrained_head

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "data" / "cub50"


def timed_train(root: Path, out: Path, cache: Path, crop: str) -> dict:
    """What 'saywhy train --dataset cub --root ROOT --arch efficientnet_lite0 --crop CROP' runs, timed."""
    started = time.perf_counter()
    _, meta = train_pretrained_head("efficientnet_lite0", root, out, crop=crop, feature_cache=cache, progress=False)
    keys = ("test_accuracy", "train_accuracy", "test_images", "train_images", "feature_seconds", "features_computed",
            "features_cached", "train_seconds")
    return {**{k: meta[k] for k in keys}, "weight_decay": meta["training"]["weight_decay"],
            "total_seconds": round(time.perf_counter() - started, 1)}


def compare_padding(root: Path, cache: Path) -> dict:
    """Same tensors in timm's symmetric-padding efficientnet_lite0: head accuracy and ImageNet top-1 agreement."""
    import timm

    from saywhy.data.cub import read_cub
    from saywhy.model.feature_cache import FeatureCache
    from saywhy.model.layers import find_layers
    from saywhy.model.linear_probe import LinearProbe, fit_head
    from saywhy.model.pretrained import PRETRAINED, build_pretrained, lite0_state_dict, load_mapped, replace_head

    dataset = read_cub(root)
    preprocess = replace(PRETRAINED["efficientnet_lite0"].preprocess, crop="bbox")
    state = lite0_state_dict()
    imagenet_w = next(v for k, v in state.items() if k.endswith("_fc.weight")).numpy()
    imagenet_b = next(v for k, v in state.items() if k.endswith("_fc.bias")).numpy()
    birds = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))
    result, top1 = {}, {}
    for name in ("tf_efficientnet_lite0", "efficientnet_lite0"):
        if name == "tf_efficientnet_lite0":
            model = build_pretrained("efficientnet_lite0", len(dataset.class_ids))
        else:
            model = timm.create_model(name, pretrained=False)
            load_mapped(model, state)
            replace_head(model, len(dataset.class_ids))
            model.eval()
        started = time.perf_counter()
        report = fit_head(model, dataset, preprocess, cache=FeatureCache(cache), probe=LinearProbe(), progress=False)
        layers = find_layers(model, torch.zeros(1, 3, 224, 224))
        feats = FeatureCache(cache).pooled(model, dataset.records, preprocess, layers, progress=False)
        top1[name] = (feats.pooled @ imagenet_w.T + imagenet_b).argmax(1)
        result[name] = {"test_accuracy": report["test_accuracy"], "feature_seconds": report["feature_seconds"],
                        "imagenet_top1_is_bird": float(np.mean([c in birds for c in top1[name]])),
                        "seconds": round(time.perf_counter() - started, 1)}
    result["imagenet_top1_agreement"] = float(np.mean(top1["tf_efficientnet_lite0"] == top1["efficientnet_lite0"]))
    result["images"] = len(top1["efficientnet_lite0"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--feature-cache", type=Path, help="cache folder (default: a fresh temp folder, so the first run is cold)")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "cub50_train.json")
    parser.add_argument("--compare-padding", action="store_true")
    parser.add_argument("--whole", action="store_true", help="also train on whole images (no bbox crop)")
    options = parser.parse_args()
    cache = options.feature_cache or Path(tempfile.mkdtemp(prefix="saywhy-features-"))
    out = Path(tempfile.mkdtemp(prefix="saywhy-cub50-"))
    results = {
        "command": "saywhy train --dataset cub --root ROOT --arch efficientnet_lite0 --crop bbox --out DIR",
        "root": str(options.root), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), python {platform.python_version()}",
    }
    results["bbox_cold"] = timed_train(options.root, out / "bbox", cache, "bbox")
    print("bbox, empty cache:", results["bbox_cold"], flush=True)
    results["bbox_cached"] = timed_train(options.root, out / "bbox", cache, "bbox")
    print("bbox, cached:", results["bbox_cached"], flush=True)
    if options.whole:
        results["whole_cold"] = timed_train(options.root, out / "whole", cache, "none")
        print("whole image, empty cache:", results["whole_cold"], flush=True)
    if options.compare_padding:
        results["padding"] = compare_padding(options.root, cache)
        print("padding:", results["padding"], flush=True)
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {options.json}")


if __name__ == "__main__":
    main()
