"""The embedded default: synthbirds + the small CNN, cached end to end.

``saywhy demo`` generates the birds, trains the CNN (or uses the shipped weights that
``saywhy train`` produced for the same synthbirds config), fits the explainer (part maps
learned from the keypoints included, as ``saywhy fit`` does) and explains a few test images.
Each step is cached under the workspace by fingerprint.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from saywhy.data.cub import read_cub
from saywhy.data.images import Preprocess
from saywhy.data.records import Dataset
from saywhy.data.synthbirds import SynthConfig, generate, load_truth
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import FORMAT_VERSION, Explainer, ExplainerConfig
from saywhy.files import atomic_folder
from saywhy.model.checkpoint import build_model, checkpoint_metadata, load_checkpoint, save_checkpoint, weights_digest
from saywhy.model.train import TrainConfig, train_classifier
from saywhy.pipeline import PART_MAP_IMAGES, PART_MAP_L2, fit_explainer, fit_part_maps
from saywhy.text.phrases import EXTRACTOR_VERSION, PhraseExtractor
from saywhy.workspace import Workspace, fingerprint

log = logging.getLogger(__name__)

DEMO_ARCH = "saywhy:smallcnn"
DEMO_ARCH_KWARGS = {"pools": 2}  # 16x16 final maps at 64 px, for grounding
DEMO_PREPROCESS = Preprocess(image_size=64)
DEMO_TRAIN = TrainConfig(epochs=12)
SHIPPED_MODEL = "synthbirds_smallcnn"


@dataclass
class DemoArtifacts:
    dataset: Dataset
    model: nn.Module
    model_meta: dict
    explainer: Explainer
    explainer_path: Path
    truth: dict


def ensure_synthbirds(workspace: Workspace, config: SynthConfig = SynthConfig(), progress: bool = True) -> Path:
    """Generate synthbirds once per config."""
    root = workspace.synthbirds(config.fingerprint())
    generate(root, config, progress=progress)
    return root


def _shipped_model_folder() -> Path | None:
    folder = Path(str(resources.files("saywhy") / "weights" / SHIPPED_MODEL))
    return folder if (folder / "model.json").is_file() else None


def train_demo_model(dataset: Dataset, dataset_fingerprint: str | None, out: Path, train: TrainConfig = DEMO_TRAIN,
                     preprocess: Preprocess = DEMO_PREPROCESS, progress: bool = True,
                     dataset_name: str = "synthbirds") -> tuple[nn.Module, dict]:
    """Train the small CNN from scratch on a CUB-layout dataset and save a checkpoint that records how.

    The demo trains on synthbirds; ``saywhy train`` (no --model) calls this too, with
    ``dataset_name`` the dataset's folder and the fingerprint synthbirds left there, if any.
    """
    torch.manual_seed(train.seed)  # the initial weights too: the same seed gives the same checkpoint
    model = build_model(DEMO_ARCH, len(dataset.class_ids), **DEMO_ARCH_KWARGS)
    report = train_classifier(model, dataset, preprocess, train, progress=progress)
    meta = checkpoint_metadata(DEMO_ARCH, [dataset.class_names[c] for c in dataset.class_ids], preprocess,
                               DEMO_ARCH_KWARGS, class_ids=dataset.class_ids, dataset=dataset_name,
                               dataset_fingerprint=dataset_fingerprint, **report)
    save_checkpoint(out, model, meta)
    return model.eval(), meta


def ensure_demo_model(workspace: Workspace, dataset: Dataset, dataset_fingerprint: str,
                      progress: bool = True) -> tuple[nn.Module, dict, Path]:
    """The cached model; else the shipped weights if they match this synthbirds config; else train."""
    key = f"smallcnn-{fingerprint(dataset_fingerprint, DEMO_ARCH, DEMO_ARCH_KWARGS, DEMO_PREPROCESS.to_dict(), DEMO_TRAIN.__dict__)}"
    folder = workspace.model(key)
    if (folder / "model.json").is_file():
        try:
            model, meta = load_checkpoint(folder)
            return model, meta, folder
        except SaywhyError as error:  # partly copied or damaged: the demo's own cache, so make it again
            log.warning("the cached demo model is unusable, making it again: %s", error)
    shipped = _shipped_model_folder()
    shipped_meta = load_checkpoint(shipped)[1] if shipped is not None else {}
    if (shipped_meta.get("dataset_fingerprint") == dataset_fingerprint
            and shipped_meta.get("arch_kwargs") == DEMO_ARCH_KWARGS):
        log.info("using the shipped demo weights")
        with atomic_folder(folder, "checkpoint") as tmp:  # whole or not at all: a kill leaves no half copy
            for name in ("model.json", "model.safetensors"):
                shutil.copy2(shipped / name, tmp / name)
    else:
        train_demo_model(dataset, dataset_fingerprint, folder, progress=progress)
    model, meta = load_checkpoint(folder)
    return model, meta, folder


def ensure_demo(workspace: Workspace | None = None, synth: SynthConfig = SynthConfig(),
                config: ExplainerConfig = ExplainerConfig(), progress: bool = True) -> DemoArtifacts:
    """Everything the demo needs, computed once and cached."""
    workspace = workspace or Workspace.default()
    root = ensure_synthbirds(workspace, synth, progress)
    dataset = read_cub(root)
    model, meta, model_folder = ensure_demo_model(workspace, dataset, synth.fingerprint(), progress)
    part_maps = {"images": PART_MAP_IMAGES, "l2": PART_MAP_L2}  # as 'saywhy fit' learns them from the keypoints
    key = fingerprint(weights_digest(model), config.__dict__, synth.fingerprint(), EXTRACTOR_VERSION, FORMAT_VERSION,
                      part_maps)
    folder = workspace.explainer(f"synthbirds-{key}")
    explainer = None
    if (folder / "explainer.json").is_file():
        try:
            explainer = Explainer.load(folder)
        except SaywhyError as error:  # damaged or partly copied: the demo's own cache, so fit it again
            log.warning("refitting the demo explainer: %s", error)
    if explainer is None:
        extractor = PhraseExtractor(cache_dir=workspace.phrase_cache, progress=progress)
        preprocess = Preprocess.from_dict(meta["preprocess"])
        explainer, _ = fit_explainer(dataset, model, preprocess, config, extractor=extractor, progress=progress,
                                     metadata={"checkpoint": str(model_folder.resolve()), "arch": meta["arch"]})
        # the embedded default is what 'saywhy fit' makes of a dataset with keypoints: part maps included
        # (a part-pooling fit has learned its own)
        if not explainer.has_part_maps:
            fit_part_maps(explainer, model, preprocess, dataset.split(train=True))
        explainer.save(folder)
    workspace.remember_explainer(folder)
    return DemoArtifacts(dataset, model, meta, explainer, folder, load_truth(root))
