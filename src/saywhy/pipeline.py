"""Glue between a dataset, a network and the explainer: what ``saywhy fit`` and ``explain`` do.

This is the only layer that runs the network *and* the probabilistic core; both stay
unaware of each other. Images without captions (or attributes) are skipped for fitting
and counted; unreadable images are skipped and counted.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from saywhy.data.images import Preprocess, open_image
from saywhy.data.records import Dataset, ImageRecord
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Contrast, Explainer, ExplainerConfig, Explanation
from saywhy.model.activations import Activations, extract_activations
from saywhy.model.checkpoint import weights_digest
from saywhy.model.feature_cache import FeatureCache
from saywhy.model.hooks import get_module
from saywhy.model.layers import LayerChoice, find_layers
from saywhy.text.phrases import PhraseExtractor
from saywhy.text.surface import learn_surface_forms
from saywhy.text.vocabulary import AttributeVocabulary

log = logging.getLogger(__name__)


@dataclass
class FitReport:
    """What fitting used and what it skipped, for the user and the saved metadata."""

    images_used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    vocabulary_size: int = 0


def image_documents(records: Sequence[ImageRecord], source: str, extractor: PhraseExtractor | None) -> list[list[str]]:
    """Per image, its attribute phrases with multiplicity: parsed captions or given attributes."""
    if source == "attributes":
        return [list(r.attributes or ()) for r in records]
    if extractor is None:
        raise SaywhyError("caption attributes need a phrase extractor")
    return extractor.extract_documents([list(r.captions or ()) for r in records])


def resolve_layers(model: nn.Module, preprocess: Preprocess, layer: str | None = None, head: str | None = None) -> LayerChoice:
    """Find the final conv layer and head with one dummy forward on the model's device."""
    device = next(model.parameters()).device
    example = torch.zeros(1, 3, preprocess.image_size, preprocess.image_size, device=device)
    return find_layers(model, example, layer, head)


def head_parameters(model: nn.Module, layers: LayerChoice) -> tuple[np.ndarray, np.ndarray]:
    """W (classes x filters) and b of the linear head."""
    head = get_module(model, layers.head)
    weight = head.weight.detach().cpu().double().numpy()
    bias = head.bias.detach().cpu().double().numpy() if head.bias is not None else np.zeros(weight.shape[0])
    return weight, bias


def fit_explainer(
    dataset: Dataset,
    model: nn.Module,
    preprocess: Preprocess,
    config: ExplainerConfig = ExplainerConfig(),
    source: str = "captions",
    extractor: PhraseExtractor | None = None,
    layer: str | None = None,
    head: str | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    activations: Activations | None = None,
    feature_cache: FeatureCache | None = None,
) -> tuple[Explainer, FitReport]:
    """Fit eq. 1-4 on the training images that have captions (or attributes).

    ``activations`` may be passed in to reuse one forward pass across several configs;
    ``feature_cache`` reads pooled features computed by an earlier run (or by training).
    """
    layers = resolve_layers(model, preprocess, layer, head)
    if layers.n_classes != len(dataset.class_ids):
        raise SaywhyError(
            f"model predicts {layers.n_classes} classes but the dataset has {len(dataset.class_ids)}: "
            "use a checkpoint trained on this dataset ('saywhy train')"
        )
    train = dataset.split(train=True)
    attr = (lambda r: r.attributes is not None) if source == "attributes" else (lambda r: r.captions is not None)
    records = [r for r in train if attr(r)]
    report = FitReport(skipped={f"training images without {source}": len(train) - len(records)})
    if report.skipped[f"training images without {source}"]:
        log.warning("%d training images have no %s and are not used for fitting",
                    report.skipped[f"training images without {source}"], source)
    if not records:
        raise SaywhyError(f"no training image has {source}: check the caption folder (--captions) or attribute file")
    if activations is None:
        activations = pooled_activations(model, records, preprocess, layers, feature_cache, progress)
    if activations.n_unreadable:
        report.skipped["unreadable images"] = activations.n_unreadable
        log.warning("%d images could not be read and were skipped", activations.n_unreadable)
    kept = [records[i] for i in activations.index]
    documents = image_documents(kept, source, extractor)
    vocabulary = AttributeVocabulary(min_df=config.min_df).fit(documents)
    counts = vocabulary.transform(documents)
    weights, bias = head_parameters(model, layers)
    meta = {
        "layer": layers.feature_layer, "head": layers.head, "preprocess": preprocess.to_dict(),
        "weights_digest": weights_digest(model), "source": source, "dataset_root": str(dataset.root),
        "images_used": len(kept), "skipped": report.skipped, **(metadata or {}),
    }
    class_names = [dataset.class_names[c] for c in dataset.class_ids]
    captions = [c for r in kept for c in (r.captions or ())]  # none for attribute files: lemmas as given
    forms = learn_surface_forms(captions, vocabulary.terms_)
    explainer = Explainer(config).fit(activations.pooled, counts, vocabulary.terms_, weights, class_names, bias, meta,
                                      surface_forms=forms)
    report.images_used, report.vocabulary_size = len(kept), len(vocabulary.terms_)
    return explainer, report


def pooled_activations(model: nn.Module, items: Sequence[ImageRecord | str | Path], preprocess: Preprocess,
                       layers: LayerChoice, feature_cache: FeatureCache | None = None,
                       progress: bool = False) -> Activations:
    """Pooled activations and logits, read from ``feature_cache`` where it has them.

    The head is linear after pooling, so logits recomputed from cached features are exact.
    """
    if feature_cache is None:
        return extract_activations(model, items, preprocess, layers, progress=progress)
    cached = feature_cache.pooled(model, items, preprocess, layers, progress=progress)
    weight, bias = head_parameters(model, layers)
    pooled = np.asarray(cached.pooled, np.float32)
    logits = (pooled.astype(np.float64) @ weight.T + bias).astype(np.float32)
    return Activations(pooled=pooled, logits=logits, index=np.asarray(cached.index), n_items=cached.n_items)


class ExplainerSession:
    """A fitted explainer with its network: explain image files end to end.

    The session checks that the network is the one the explainer was fitted on. With a
    ``feature_cache``, pooled features of images seen before are read, not recomputed.
    """

    def __init__(self, explainer: Explainer, model: nn.Module, preprocess: Preprocess | None = None,
                 feature_cache: FeatureCache | None = None, map_memo: dict | None = None):
        # ``map_memo``: a dict shared by sessions over the same network and preprocessing, so
        # that comparing explainers (an ablation) runs one forward pass per image for the maps.
        self.explainer, self.model, self.feature_cache, self.map_memo = explainer, model, feature_cache, map_memo
        meta = explainer.metadata_
        self.preprocess = preprocess or Preprocess.from_dict(meta["preprocess"])
        digest = meta.get("weights_digest")
        if digest and digest != weights_digest(model):
            raise SaywhyError("this explainer was fitted on another network's weights: refit it with 'saywhy fit'")
        self.layers = resolve_layers(model, self.preprocess, meta.get("layer"), meta.get("head"))

    def activations(self, items: Sequence[ImageRecord | str | Path], keep_maps: bool = False,
                    progress: bool = False, strict: bool = True) -> Activations:
        """Activations of ``items``; with ``strict`` an unreadable image is an error naming it,
        otherwise it is dropped (``Activations.index`` says which rows remain)."""
        if keep_maps:
            key = (tuple(str(i.path if isinstance(i, ImageRecord) else i) for i in items), repr(self.preprocess.to_dict()))
            acts = None if self.map_memo is None else self.map_memo.get(key)
            if acts is None:
                acts = extract_activations(self.model, items, self.preprocess, self.layers, keep_maps=True, progress=progress)
                if self.map_memo is not None:
                    self.map_memo[key] = acts
        else:
            acts = pooled_activations(self.model, items, self.preprocess, self.layers, self.feature_cache, progress)
        if strict and acts.n_unreadable:
            readable = set(acts.index.tolist())
            for position, item in enumerate(items):
                if position not in readable:
                    open_image(item.path if isinstance(item, ImageRecord) else item)  # raises the clear error
        return acts

    def explain(self, items: Sequence[ImageRecord | str | Path], class_: str | int | None = None) -> list[Explanation]:
        acts = self.activations(items)
        classes = None if class_ is None else np.full(len(acts.index), self.explainer.class_index(class_))
        return self.explainer.explain(acts.pooled, classes)

    def contrast(self, item: ImageRecord | str | Path, other: str | int, class_: str | int | None = None) -> Contrast:
        acts = self.activations([item])
        mine = self.explainer.predict(acts.pooled)[0] if class_ is None else self.explainer.class_index(class_)
        return self.explainer.contrast(acts.pooled, int(mine), other)
