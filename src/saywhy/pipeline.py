"""Glue between a dataset, a network and the explainer: what ``saywhy fit`` and ``explain`` do.

This is the only layer that runs the network *and* the probabilistic core; both stay
unaware of each other. Images without captions (or attributes) are skipped for fitting
and counted; unreadable images are skipped and counted.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from saywhy.blas import Beside, one_blas_thread, one_blas_thread_call, side_by_side, usable_cores
from saywhy.core.grounding import (
    cells_to_image,
    normalize_heatmaps,
    peak_cells,
    upsample_heatmap,
)
from saywhy.data.images import ImageDataset, Preprocess, image_size, open_image
from saywhy.data.inputs import as_items, has_box, item_name, with_boxes
from saywhy.data.records import Dataset, ImageRecord
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import (
    ClassDescription,
    Contrast,
    Explainer,
    ExplainerConfig,
    Explanation,
)
from saywhy.model.activations import Activations, extract_activations, model_device
from saywhy.model.checkpoint import checkpoint_identity, weights_digest
from saywhy.model.feature_cache import FeatureCache, MapRows, backbone_digest
from saywhy.model.hooks import get_module
from saywhy.model.layers import LayerChoice, find_layers
from saywhy.model.lazy_network import (
    LazyNetwork,
    NetworkRecord,
    module_of,
    network_record,
    open_network,
)
from saywhy.search import SearchResult, query_indices, search_images
from saywhy.tensors import is_tensor
from saywhy.text.phrases import PhraseExtractor
from saywhy.text.surface import learn_surface_forms
from saywhy.text.synonyms import SynonymGroups, learn_synonyms
from saywhy.text.vocabulary import AttributeVocabulary

if TYPE_CHECKING:
    from torch import nn

    from saywhy.core.part_maps import PartMaps

log = logging.getLogger(__name__)

MEMO_ITEMS = 64  # an explain call over at most this many inputs keeps its maps for ground()
MEMO_BYTES = 256 * 2**20  # ... when they take at most this much memory
GRAD_CAM_BATCH = 16  # inputs per Grad-CAM backward pass: its memory grows with the batch
ALPHA_MEMO = 256  # attribute lists whose eq. 9 rows a session keeps (a lookup each, not a vocabulary scan)


@dataclass
class FitReport:
    """What fitting used and what it skipped, for the user and the saved metadata."""

    images_used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    vocabulary_size: int = 0
    accuracy: float | None = None  # the network's accuracy on the fitting images
    warnings: list[str] = field(default_factory=list)


def require_same_classes(dataset_names: Sequence[str], expected: Sequence[str], owner: str, advice: str) -> None:
    """Refuse a dataset whose classes (in order) are not ``owner``'s, naming the first difference.

    >>> require_same_classes(["001.A", "002.B"], ["001.A", "002.C"], "the checkpoint", "fit on its dataset")
    Traceback (most recent call last):
    saywhy.errors.SaywhyError: the dataset's classes differ from the checkpoint's (2 against 2; first difference: '002.B' where the checkpoint has '002.C'): fit on its dataset
    """
    if list(dataset_names) == list(expected):
        return
    differ = next(((a, b) for a, b in zip(expected, dataset_names) if a != b), None)
    raise SaywhyError(f"the dataset's classes differ from {owner}'s ({len(dataset_names)} against {len(expected)}"
                      + (f"; first difference: {differ[1]!r} where {owner} has {differ[0]!r}" if differ else "")
                      + f"): {advice}")


def image_documents(records: Sequence[ImageRecord], source: str, extractor: PhraseExtractor | None) -> list[list[str]]:
    """Per image, its attribute phrases with multiplicity: parsed captions or given attributes."""
    if source == "attributes":
        return [list(r.attributes or ()) for r in records]
    if extractor is None:
        raise SaywhyError("caption attributes need a phrase extractor")
    return extractor.extract_documents([list(r.captions or ()) for r in records])


def caption_phrases(records: Sequence[ImageRecord], extractor: PhraseExtractor | None) -> list[list[list[str]]]:
    """Per image, per caption, its phrases: what synonyms and vague words are learned from."""
    if extractor is None:
        raise SaywhyError("caption attributes need a phrase extractor")
    per_caption = iter(extractor.extract([c for r in records for c in (r.captions or ())]))
    return [[next(per_caption) for _ in (r.captions or ())] for r in records]


def resolve_layers(model: nn.Module, preprocess: Preprocess, layer: str | None = None, head: str | None = None) -> LayerChoice:
    """Find the final conv layer and head with one dummy forward on the model's device."""
    import torch

    device = next(model.parameters()).device
    example = torch.zeros(1, 3, preprocess.image_size, preprocess.image_size, device=device)
    return find_layers(model, example, layer, head)


def head_parameters(model: nn.Module, layers: LayerChoice) -> tuple[np.ndarray, np.ndarray]:
    """W (classes x filters) and b of the linear head."""
    head = get_module(model, layers.head)
    weight = head.weight.detach().cpu().double().numpy()
    bias = head.bias.detach().cpu().double().numpy() if head.bias is not None else np.zeros(weight.shape[0])
    return weight, bias


def check_fit_classes(dataset: Dataset, layers: LayerChoice, model_classes: Sequence[str] | None) -> list[str]:
    """The dataset's class names, refused unless they are the network's (and the checkpoint's)."""
    class_names = [dataset.class_names[c] for c in dataset.class_ids]
    if model_classes is not None:
        require_same_classes(class_names, model_classes, "the checkpoint", "fit on the dataset the network was trained on")
    if layers.n_classes != len(dataset.class_ids):
        raise SaywhyError(
            f"model predicts {layers.n_classes} classes but the dataset has {len(dataset.class_ids)}: "
            "use a checkpoint trained on this dataset ('saywhy train')"
        )
    return class_names


def fitting_records(dataset: Dataset, source: str) -> tuple[list[ImageRecord], FitReport]:
    """The training images with captions (or attributes), in the dataset's order, and a report of the rest."""
    train = dataset.split(train=True)
    attr = (lambda r: r.attributes is not None) if source == "attributes" else (lambda r: r.captions is not None)
    records = [r for r in train if attr(r)]
    report = FitReport(skipped={f"training images without {source}": len(train) - len(records)})
    if report.skipped[f"training images without {source}"]:
        log.warning("%d training images have no %s and are not used for fitting",
                    report.skipped[f"training images without {source}"], source)
    if not records:
        raise SaywhyError(f"no training image has {source}: check the caption folder (--captions) or attribute file")
    return records, report


def near_chance_warning(report: FitReport, n_classes: int) -> None:
    """Add a warning to ``report`` when the network is near chance on the fitting images."""
    chance = 1.0 / n_classes
    if report.accuracy is not None and report.accuracy < 2 * chance:
        report.warnings.append(
            f"the network is near chance on the fitting images ({report.accuracy:.1%} correct, chance is {chance:.1%}): "
            "its explanations will not mean much; train it first ('saywhy train') or check the classes and preprocessing")
        log.warning("%s", report.warnings[-1])


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
    model_classes: Sequence[str] | None = None,
    synonyms: SynonymGroups | None = None,
    attribute_parts_file: str | Path | None = None,
) -> tuple[Explainer, FitReport]:
    """Fit eq. 1-4 on the training images that have captions (or attributes).

    ``activations`` may be passed in to reuse one forward pass across several configs;
    ``feature_cache`` reads pooled features computed by an earlier run (or by training);
    ``model_classes``, the checkpoint's class names, must be the dataset's. A network near
    chance on the fitting images is fitted, with a warning in the report and the metadata.
    ``synonyms``: the word groups to merge before the vocabulary is built; None learns them
    from the captions (:func:`saywhy.text.synonyms.learn_synonyms`).
    With ``config.evidence_pooling`` "part" or "both" ("auto", the default, is "both" where the training
    images have keypoints and "global" where they have none), part maps are learned from the training
    keypoints (:func:`fit_part_maps`, with ``attribute_parts_file``) and the part-attributes' evidence is
    refitted on the fitting images' part-pooled maps. Each fitting image still runs through the network
    once: its maps are kept on disk meanwhile (:func:`spilled_map_activations`), or read from
    ``activations.maps`` where given. "part" or "both" asked for without keypoints is fitted with global
    pooling, with a warning in the report.
    """
    layers = resolve_layers(model, preprocess, layer, head)
    class_names = check_fit_classes(dataset, layers, model_classes)
    records, report = fitting_records(dataset, source)
    keypoints = any(r.keypoints for r in dataset.split(train=True))
    config = config.for_fit(part_maps=keypoints)  # "auto" pooling: under part maps where keypoints teach them
    spill = None  # with part pooling: the fitting images' maps, kept on disk for the part maps and the part pools
    beside: Beside | None = None  # the part maps, learned beside the remaining forward passes
    if activations is None and config.pools_evidence and keypoints:
        spill = tempfile.TemporaryDirectory(prefix="saywhy-maps-")
        train = dataset.split(train=True)
        position = {r.path: i for i, r in enumerate(records)}
        sample = part_map_records(train)
        # the part maps' sample runs first, and its part maps are learned on a free core while the
        # other fitting images run. The images then meet other images in their batches, and a few
        # round differently (1e-6 of a feature on cub50): the fit equals a one-core fit to L-BFGS's
        # tolerance, not to the bit (tests/test_fit_side_by_side.py)
        first = [position[r.path] for r in sample] if spare_core(model) and sample and \
            all(r.path in position for r in sample) else []
        if first != sorted(first) or len(set(first)) != len(first):  # rows come back in the records' order, once each
            first = []

        def when_first(acts: Activations) -> None:
            nonlocal beside
            if acts.n_unreadable == 0:  # else after the forward passes, as without a free core
                beside = Beside(lambda: learn_part_maps(model, preprocess, train, attribute_parts_file, layers=layers,
                                                        activations=acts)).start()

    interrupted = False
    try:
        if spill is not None:
            activations = spilled_map_activations(model, records, preprocess, layers, Path(spill.name), feature_cache,
                                                  progress, first=first, when_first=when_first)
        elif activations is None:
            activations = pooled_activations(model, records, preprocess, layers, feature_cache, progress)
        return _fit_from_activations(dataset, model, preprocess, config, source, extractor, metadata, progress,
                                     activations, synonyms, attribute_parts_file, layers, class_names, records, report,
                                     beside)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if beside is not None and not interrupted:  # its maps are in memory; it gives BLAS back as it ends
            beside.wait()
        if spill is not None:
            spill.cleanup()


def spare_core(model: nn.Module | LazyNetwork) -> bool:
    """Whether the forward passes leave a core free for other work: on the GPU, or with fewer torch
    threads than usable cores (``OMP_NUM_THREADS=1`` on a 2-core machine)."""
    import torch

    cores = usable_cores()
    if cores < 2:
        return False
    return model_device(module_of(model)).type != "cpu" or torch.get_num_threads() < cores


def _fit_from_activations(dataset, model, preprocess, config, source, extractor, metadata, progress, activations,
                          synonyms, attribute_parts_file, layers, class_names, records, report, beside=None
                          ) -> tuple[Explainer, FitReport]:
    if activations.n_unreadable:
        report.skipped["unreadable images"] = activations.n_unreadable
        log.warning("%d images could not be read and were skipped", activations.n_unreadable)
    kept = [records[i] for i in activations.index]
    if not np.isfinite(activations.pooled).all():
        raise SaywhyError("the network's activations contain NaN or infinite numbers: check its weights "
                          "(a damaged checkpoint?) and the preprocessing")
    labels = np.array([dataset.class_index(r.class_id) for r in kept])
    report.accuracy = float(np.mean(activations.logits.argmax(axis=1) == labels)) if len(kept) else None
    near_chance_warning(report, len(dataset.class_ids))
    per_caption = caption_phrases(kept, extractor) if source == "captions" else None
    # an image's document is its captions' phrases in order: read from the per-caption phrases
    # rather than looked up a second time (hashing every caption again cost a cub50 fit 1-2 s)
    documents = image_documents(kept, source, extractor) if per_caption is None \
        else [[phrase for caption in image for phrase in caption] for image in per_caption]
    if synonyms is None:
        synonyms = learn_synonyms(per_caption) if per_caption is not None else SynonymGroups([], "none")
    vocabulary = AttributeVocabulary(min_df=config.min_df, synonyms=synonyms).fit(documents)
    counts = vocabulary.transform(documents)
    weights, bias = head_parameters(model, layers)
    meta = {
        "layer": layers.feature_layer, "head": layers.head, "preprocess": preprocess.to_dict(),
        "weights_digest": weights_digest(model), "source": source, "dataset_root": str(dataset.root),
        "images_used": len(kept), "skipped": report.skipped, "fit_accuracy": report.accuracy,
        "warnings": report.warnings, **(metadata or {}),
    }
    record = fitted_network_record(model, preprocess, layers)
    if record is not None:
        meta["network"] = record.to_dict()
    captions = [c for r in kept for c in (r.captions or ())]  # none for attribute files: lemmas as given
    merged = None if per_caption is None else [[synonyms.terms(c) for c in image] for image in per_caption]
    forms = learn_surface_forms(captions, vocabulary.terms_, merged)

    def fit_global() -> Explainer:
        return Explainer(config).fit(activations.pooled, counts, vocabulary.terms_, weights, class_names, bias, meta,
                                     surface_forms=forms, synonyms=synonyms)

    if not config.pools_evidence:
        explainer = fit_global()
    else:
        train = dataset.split(train=True)
        maps = activations.maps  # the fitting images' maps, in the rows of activations.pooled, when kept
        sample = None if maps is None or beside is not None else _sample_activations(activations, kept, train)

        def learn() -> LearnedPartMaps | None:
            return learn_part_maps(model, preprocess, train, attribute_parts_file, layers=layers, progress=progress,
                                   activations=sample)

        if beside is not None:  # learned beside the forward passes: done by now, or nearly
            learned = beside.result()
            explainer = fit_global()
        elif sample is not None:  # independent fits: the evidence on phi(x) and the part maps, side by side
            explainer, learned = side_by_side(lambda task: task(), [fit_global, learn])
        else:  # learn() runs the network: after the fit, not beside it
            explainer, learned = fit_global(), learn()
        if learned is not None:
            attach_part_maps(explainer, learned)
        if explainer.needs_part_pools:
            if maps is not None:  # the same float32 maps and rows part_pooled_activations computes, read back
                pools = np.concatenate([np.asarray(explainer.part_pools(maps[i:i + PART_POOL_CHUNK],
                                                                        activations.pooled[i:i + PART_POOL_CHUNK]),
                                                   np.float32) for i in range(0, len(kept), PART_POOL_CHUNK)])
            else:
                computed = part_pooled_activations(explainer, model, kept, preprocess, layers, peaks=False)
                if computed.n_unreadable:
                    raise SaywhyError(f"{computed.n_unreadable} of the images to part-pool could not be read")
                pools = computed.pooled
            explainer.fit_part_evidence(pools, counts)
        else:
            report.warnings.append("evidence pooling 'part' needs training keypoints: the evidence is pooled globally")
    report.images_used, report.vocabulary_size = len(kept), len(vocabulary.terms_)
    return explainer, report


PART_POOL_CHUNK = 128  # images whose maps are held at once while they are part-pooled


def spilled_map_activations(model: nn.Module, records: Sequence[ImageRecord], preprocess: Preprocess,
                            layers: LayerChoice, folder: Path, feature_cache: FeatureCache | None = None,
                            progress: bool = False, first: Sequence[int] = (),
                            when_first: Callable[[Activations], Any] | None = None) -> Activations:
    """Activations of ``records`` whose ``maps`` are a float32 memory map in ``folder`` (about images x F x h x w
    x 4 bytes of disk: 1,500 x 1280 x 7 x 7, 376 MB), from forward passes over :data:`PART_POOL_CHUNK` images
    at a time: a part-pooling fit reads its part maps' sample and every image's part pools from it, so
    each fitting image runs through the network once. Their pooled rows go into ``feature_cache``.
    ``first``: positions in ``records`` run before the others; ``when_first`` is called with their
    activations (``index`` into ``first``, maps in memory) as soon as they are done, before the others
    run (a fit starts its part maps there, beside the remaining forward passes). Rows come back in the
    records' order whatever ran first."""
    first = sorted(set(int(i) for i in first))
    rest = sorted(set(range(len(records))) - set(first))
    maps = None
    pooled, logits, index = [], [], []
    for group in (first, rest):
        for start in range(0, len(group), PART_POOL_CHUNK):
            positions = np.array(group[start:start + PART_POOL_CHUNK], np.int64)
            chunk = [records[i] for i in positions]
            acts = extract_activations(module_of(model), chunk, preprocess, layers, keep_maps=True, progress=progress)
            if not len(acts.index):
                continue
            if maps is None:
                maps = np.lib.format.open_memmap(folder / "maps.npy", mode="w+", dtype=np.float32,
                                                 shape=(len(records), *acts.maps.shape[1:]))
            maps[positions[acts.index]] = acts.maps  # row = position in records
            pooled.append(np.asarray(acts.pooled, np.float32))
            logits.append(acts.logits)
            index.append(positions[acts.index])
            if feature_cache is not None:
                feature_cache.add(model, [chunk[i] for i in acts.index], preprocess, layers, acts.pooled)
        if group is first and first and when_first is not None:  # only the first group's rows are in so far
            rows = np.concatenate(index) if index else np.zeros(0, np.int64)
            when_first(Activations(
                pooled=np.concatenate(pooled) if index else np.zeros((0, layers.n_filters), np.float32),
                logits=np.concatenate(logits) if index else np.zeros((0, layers.n_classes), np.float32),
                index=np.searchsorted(first, rows), maps=np.asarray(maps[rows]) if index else None,
                n_items=len(first)))
    if maps is None:
        return Activations(pooled=np.zeros((0, layers.n_filters), np.float32),
                           logits=np.zeros((0, layers.n_classes), np.float32), index=np.zeros(0, np.int64),
                           n_items=len(records))
    kept = np.concatenate(index)
    order = np.argsort(kept, kind="stable")
    kept = kept[order]
    if len(kept) < len(records):  # unreadable images: the kept rows copied into a map of their own, in order
        compact = np.lib.format.open_memmap(folder / "maps_kept.npy", mode="w+", dtype=np.float32,
                                            shape=(len(kept), *maps.shape[1:]))
        for start in range(0, len(kept), PART_POOL_CHUNK):
            compact[start:start + PART_POOL_CHUNK] = maps[kept[start:start + PART_POOL_CHUNK]]
        maps = compact
    return Activations(pooled=np.concatenate(pooled)[order], logits=np.concatenate(logits)[order], index=kept,
                       maps=maps, n_items=len(records))


def _sample_activations(activations: Activations, kept: Sequence[ImageRecord], records: Sequence[ImageRecord]
                        ) -> Activations | None:
    """The part-map sample's (:func:`part_map_records` of ``records``) rows of ``activations`` (whose rows are
    ``kept``), maps included; None when a sampled record is not among them (it is then run again)."""
    sample = part_map_records(records)
    row = {r.path: i for i, r in enumerate(kept)}
    if not sample or any(r.path not in row for r in sample):
        return None
    rows = np.array([row[r.path] for r in sample])
    return Activations(pooled=activations.pooled[rows], logits=activations.logits[rows],
                       index=np.arange(len(sample)), maps=np.asarray(activations.maps[rows]), n_items=len(sample))


def part_pooled_activations(explainer: Explainer, model: nn.Module | LazyNetwork, items: Sequence[Any],
                            preprocess: Any, layers: LayerChoice, progress: bool = False,
                            peaks: bool = True) -> Activations:
    """Activations whose ``pooled`` is what an explainer that reads the maps takes: phi(x), then its part
    pools (:meth:`Explainer.part_pools`), then, with ``peaks``, its parts' peak log-odds where it reads
    visibility from them (:meth:`Explainer.map_activations`), from forward passes that keep the maps of
    :data:`PART_POOL_CHUNK` images at a time (no cache: ``ExplainerSession`` reads them through the
    feature cache's :class:`~saywhy.model.feature_cache.MapRows`); unreadable images
    are left out (``index``)."""
    features = one_blas_thread_call(explainer.map_activations if peaks else explainer.part_pools)
    pooled, logits, index = [], [], []
    for start in range(0, len(items), PART_POOL_CHUNK):
        acts = extract_activations(module_of(model), items[start:start + PART_POOL_CHUNK], preprocess, layers,
                                   keep_maps=True, progress=progress)
        if not len(acts.index):  # nothing readable in this chunk: no maps to pool
            continue
        pooled.append(np.asarray(features(acts.maps, acts.pooled), np.float32))  # float32, as the cache keeps them
        logits.append(acts.logits)
        index.append(acts.index + start)
    width, n_classes = explainer.activation_width_ if peaks else explainer.feature_width_, len(explainer.class_names_)
    return Activations(pooled=np.concatenate(pooled) if pooled else np.zeros((0, width), np.float32),
                       logits=np.concatenate(logits) if logits else np.zeros((0, n_classes)),
                       index=np.concatenate(index) if index else np.zeros(0, np.int64), n_items=len(items))


def fitted_network_record(model: nn.Module, preprocess: Preprocess, layers: LayerChoice) -> NetworkRecord | None:
    """What an explainer fitted on ``model`` records of it, so that a session over the same checkpoint
    can check it and explain cached images without building it (:mod:`saywhy.model.lazy_network`):
    the layers a session resolves (the fitted layer and head, probed at the preprocessing's size)
    and the feature cache's backbone digest. None for a network that did not come from a checkpoint."""
    if checkpoint_identity(model) is None:
        return None
    probe = Preprocess(image_size=preprocess.image_size)
    return network_record(model, resolve_layers(model, probe, layers.feature_layer, layers.head), probe.image_size,
                          backbone_digest(model, layers.head))


PART_MAP_IMAGES = 600  # training images whose maps fit the part maps (seeded sample): (F x h x w) float32 each
PART_MAP_L2 = 0.1  # chosen on cub50's validation split of training images (benchmarks/choose_defaults.py --part-maps)


def keypoint_cells(record: ImageRecord, parts: Sequence[str], grid: tuple[int, int], box: tuple[float, float, float, float]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) final-map (row, col) of each part's keypoint in ``record`` and (P,) visibility (1 visible,
    0 hidden, -1 not annotated), on an h x w ``grid`` over the ``box`` (x0, y0, x1, y1) the network saw."""
    from saywhy.core.part_maps import NOT_ANNOTATED

    h, w = grid
    x0, y0, x1, y1 = box
    cells, visible = np.zeros((len(parts), 2), np.int64), np.full(len(parts), NOT_ANNOTATED, np.int64)
    for p, name in enumerate(parts):
        k = record.keypoints.get(name)
        if k is None:
            continue
        visible[p] = int(k.visible)
        cells[p] = (min(max(int((k.y - y0) / max(y1 - y0, 1e-9) * h), 0), h - 1),
                    min(max(int((k.x - x0) / max(x1 - x0, 1e-9) * w), 0), w - 1))
    return cells, visible


def part_map_records(records: Sequence[ImageRecord], max_images: int = PART_MAP_IMAGES, seed: int = 0
                     ) -> list[ImageRecord]:
    """The records part maps are fitted on: those with keypoints, a seeded sample of at most ``max_images``, in order."""
    with_keypoints = [r for r in records if r.keypoints]
    if len(with_keypoints) > max_images:
        rng = np.random.default_rng(seed)
        with_keypoints = [with_keypoints[i] for i in sorted(rng.choice(len(with_keypoints), max_images, replace=False))]
    return with_keypoints


def part_map_activations(model: nn.Module, records: Sequence[ImageRecord], preprocess: Preprocess, layers: LayerChoice,
                         feature_cache: FeatureCache | None = None, progress: bool = False) -> Activations:
    """The maps of the part-map sample of ``records`` (:func:`part_map_records`), one forward pass each.

    With a ``feature_cache`` their pooled rows are stored in it as well, so that the explainer's
    fit, run next over the same training images, reads them rather than running them again: a
    cold ``saywhy fit`` runs every image through the network once, part maps included.
    """
    sample = part_map_records(records)
    acts = extract_activations(model, sample, preprocess, layers, keep_maps=True, progress=progress)
    if feature_cache is not None and len(acts.index):
        feature_cache.add(model, [sample[i] for i in acts.index], preprocess, layers, acts.pooled)
    return acts


def fit_part_maps(explainer: Explainer, model: nn.Module, preprocess: Preprocess, records: Sequence[ImageRecord],
                  attribute_parts_file: str | Path | None = None, max_images: int = PART_MAP_IMAGES, seed: int = 0,
                  l2: float = PART_MAP_L2, layers: LayerChoice | None = None, progress: bool = False,
                  activations: Activations | None = None) -> Explainer | None:
    """Learn where each annotated part is on the final maps, and how likely it shows, from the training
    ``records`` that carry keypoints (:class:`saywhy.core.part_maps.PartMaps`), and attach them to
    ``explainer`` with each vocabulary term's part (through the noun -> part map: saywhy's
    ``data/attribute_parts.json`` or ``attribute_parts_file``). None (and the explainer unchanged)
    when no record has keypoints. At most ``max_images`` records (a seeded sample,
    :func:`part_map_records`) are run through the network with their maps kept: about
    max_images x F x h x w x 4 bytes (600 x 1280 x 7 x 7: 150 MB), and twice that as float64 rows
    of the fit of one part. ``activations``: those records' maps, already computed
    (:func:`part_map_activations`, with the default sample size and seed).
    """
    learned = learn_part_maps(model, preprocess, records, attribute_parts_file, max_images, seed, l2, layers, progress,
                              activations)
    return None if learned is None else attach_part_maps(explainer, learned)


@dataclass
class LearnedPartMaps:
    """What :func:`learn_part_maps` learned, to attach to an explainer (:func:`attach_part_maps`)."""

    part_maps: PartMaps
    part_map: dict[str, tuple[str, ...]]  # noun -> parts
    settings: dict[str, Any]


def learn_part_maps(model: nn.Module, preprocess: Preprocess, records: Sequence[ImageRecord],
                    attribute_parts_file: str | Path | None = None, max_images: int = PART_MAP_IMAGES, seed: int = 0,
                    l2: float = PART_MAP_L2, layers: LayerChoice | None = None, progress: bool = False,
                    activations: Activations | None = None) -> LearnedPartMaps | None:
    """:func:`fit_part_maps` without an explainer: the part maps, the noun -> part map and the settings
    (None when no record has keypoints), so that they can be learned beside the evidence fit."""
    from saywhy.core.part_maps import PartMaps
    from saywhy.metrics.pck import load_attribute_parts

    with_keypoints = part_map_records(records, max_images, seed)
    if not with_keypoints:
        return None
    part_map = load_attribute_parts(attribute_parts_file)
    parts = sorted({name for r in with_keypoints for name in r.keypoints})
    layers = layers or resolve_layers(model, preprocess)
    acts = activations if activations is not None else \
        extract_activations(model, with_keypoints, preprocess, layers, keep_maps=True, progress=progress)
    if acts.maps is None or acts.n_items != len(with_keypoints):
        raise SaywhyError(f"part maps need the maps of the {len(with_keypoints)} sampled records; got activations of "
                          f"{acts.n_items} (pass those of part_map_activations with the same records)")
    kept = [with_keypoints[i] for i in acts.index]
    if not kept:
        return None
    grid = acts.maps.shape[-2:]
    cells, visible = zip(*(keypoint_cells(r, parts, grid, preprocess.seen_box(image_size(r.path), r.bbox)) for r in kept))
    with one_blas_thread():  # as every fit's L-BFGS: the same numbers however many cores (saywhy.blas.side_by_side)
        fitted = PartMaps(l2=l2).fit(acts.maps, np.stack(cells), np.stack(visible), parts)
    settings = {"images": len(kept), "seed": seed, "l2": l2, "max_images": max_images,
                "attribute_parts_file": str(attribute_parts_file) if attribute_parts_file else None}
    return LearnedPartMaps(fitted, part_map, settings)


def attach_part_maps(explainer: Explainer, learned: LearnedPartMaps) -> Explainer:
    """Attach :func:`learn_part_maps`' part maps to a fitted ``explainer``, with each vocabulary term's parts."""
    from saywhy.metrics.pck import attribute_parts

    terms = {t: list(attribute_parts(t, learned.part_map)) for t in explainer.vocabulary_}
    return explainer.set_part_maps(learned.part_maps, {t: p for t, p in terms.items() if p}, learned.settings)


def pooled_activations(model: nn.Module | LazyNetwork, items: Sequence[ImageRecord | str | Path], preprocess: Preprocess,
                       layers: LayerChoice, feature_cache: FeatureCache | None = None,
                       progress: bool = False, head: tuple[np.ndarray, np.ndarray] | None = None,
                       rows: MapRows | None = None) -> Activations:
    """Pooled activations and logits, read from ``feature_cache`` where it has them.

    The head is linear after pooling, so logits recomputed from cached features are exact.
    ``head``: (W, b) to compute them with, e.g. the explainer's copy for a network not built.
    ``rows``: the rows an explainer makes from the maps instead (phi(x) first, which the logits read),
    kept by the cache under their own key; they need the cache.
    """
    if feature_cache is None:
        if rows is not None:
            raise SaywhyError("rows made from the maps are read through a feature cache: give one")
        return extract_activations(module_of(model), items, preprocess, layers, progress=progress)
    cached = feature_cache.pooled(model, items, preprocess, layers, progress=progress, rows=rows)
    weight, bias = head if head is not None else head_parameters(module_of(model), layers)
    pooled = np.asarray(cached.pooled, np.float32)
    logits = (pooled[:, :weight.shape[1]].astype(np.float64) @ weight.T + bias).astype(np.float32)
    return Activations(pooled=pooled, logits=logits, index=np.asarray(cached.index), n_items=cached.n_items)


@dataclass
class Heatmaps:
    """Eq. 9 for several attributes of one image, at layer and at image resolution.

    ``layer``: (T, h, w) raw sums sum_k alpha_k f_k(x) (signed: negative where the map
    speaks against the attribute). ``image``: (T, H, W), each rescaled to [0, 1] (eq. 9's
    sigma = min-max) and placed on the input: the original image's pixels for files and
    PIL images (0 outside the box the network saw), the tensor's own for tensors.
    ``class_map``: the CAM of the explained class, sum_k w_ck f_k(x), (h, w) at layer
    resolution and ``class_image`` (H, W) like ``image``. The image-resolution maps are
    computed when first read (upsampling costs more than the maps themselves), like
    Captum's ``LayerAttribution.interpolate`` is a separate step.
    """

    attributes: list[str]
    layer: np.ndarray
    class_map: np.ndarray
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1): the region of the input the network saw
    image_size: tuple[int, int]  # (W, H) of the input
    class_index: int = -1  # the class whose CAM ``class_map`` is

    @cached_property
    def image(self) -> np.ndarray:
        """(T, H, W): each attribute's map in [0, 1] on the input's pixels."""
        if not len(self.layer):
            return np.zeros((0, self.image_size[1], self.image_size[0]))
        return np.stack([self._upsample(m) for m in self.layer])

    @cached_property
    def class_image(self) -> np.ndarray:
        """(H, W): the class's CAM in [0, 1] on the input's pixels."""
        return self._upsample(self.class_map)

    def _upsample(self, scores: np.ndarray) -> np.ndarray:
        return upsample_heatmap(normalize_heatmaps(scores), self.box, self.image_size)

    def peaks(self) -> np.ndarray:
        """(T, 2): the (x, y) input pixel of each attribute's strongest cell."""
        return cells_to_image(peak_cells(self.layer), self.layer.shape[-2:], self.box)

    def select(self, attributes: Sequence[str]) -> Heatmaps:
        """The maps of ``attributes`` (each already mapped here), in that order."""
        rows = [self.attributes.index(t) for t in attributes]
        return Heatmaps(list(attributes), self.layer[rows], self.class_map, self.box, self.image_size, self.class_index)


class SpilledMaps:
    """A dict of :class:`Activations` whose spatial maps wait on disk: memory stays flat however many are kept.

    ``evaluate --ablation`` runs every explainer config over the same images; this memo lets each
    chunk's forward pass serve every row, with the (images x filters x h x w) maps written to a
    private temporary folder (0.25-0.4 GB per 1,000 images at 224 px) and read back one chunk at a
    time, instead of all held in memory for the whole run. The folder is deleted by :meth:`close`,
    at exit, or when the memo is garbage-collected.
    """

    def __init__(self, folder: str | Path | None = None):
        import tempfile

        self._folder = Path(tempfile.mkdtemp(prefix="saywhy-maps-", dir=folder))
        self._rows: dict[Any, tuple[Activations, Path | None]] = {}
        self._cleanup = weakref.finalize(self, _remove_folder, self._folder)

    def get(self, key: Any, default: Any = None) -> Activations | None:
        found = self._rows.get(key)
        if found is None:
            return default
        acts, path = found
        maps = np.load(path) if path is not None else None
        return dataclasses.replace(acts, maps=maps)

    def __setitem__(self, key: Any, acts: Activations) -> None:
        path = None
        if acts.maps is not None:
            path = self._folder / f"{len(self._rows)}.npy"
            np.save(path, acts.maps)
        self._rows[key] = (dataclasses.replace(acts, maps=None), path)

    def __contains__(self, key: Any) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        """Delete the maps on disk; the memo is empty afterwards."""
        self._rows.clear()
        self._cleanup()


def _remove_folder(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


class ExplainerSession:
    """A fitted explainer with its network: the one object that explains images end to end.

    ``session(inputs, target=None)`` (= :meth:`explain`) takes tensors (already
    preprocessed), PIL images, paths, folders or records, alone or in a list, and
    ``target`` as None (the network's decision), one class, or one per input. Grounding
    (:meth:`ground`), contrast, class description and attribute search are methods of the
    same object. The session checks that the network is the one the explainer was fitted
    on; with a ``feature_cache``, pooled features of image files seen before are read, not
    recomputed. ``preprocess`` defaults to the explainer's (a torchvision transform is
    accepted too).
    """

    def __init__(self, explainer: Explainer, model: nn.Module | LazyNetwork, preprocess: Any = None,
                 feature_cache: FeatureCache | None = None, map_memo: dict | None = None):
        # ``map_memo``: a dict shared by sessions over the same network and preprocessing, so
        # that comparing explainers (an ablation) runs one forward pass per image for the maps.
        self.explainer, self.feature_cache, self.map_memo = explainer, feature_cache, map_memo
        self._network = model
        meta = explainer.metadata_
        self.preprocess = preprocess or Preprocess.from_dict(meta["preprocess"])
        self.layers = self._recorded_layers()
        if self.layers is None:  # a network at hand (or one the record does not cover): checked on it, now
            digest = meta.get("weights_digest")
            if digest and digest != weights_digest(self.model):
                raise SaywhyError("this explainer was fitted on another network's weights: refit it with 'saywhy fit', "
                                  "or pass the checkpoint it was fitted on (--model)")
            self.layers = resolve_layers(self.model, self._probe_size(), meta.get("layer"), meta.get("head"))
        self._known_boxes: dict[str, ImageRecord] | None = None
        self._alphas: np.ndarray | None = None
        self._alpha_rows: dict[tuple[str, ...], np.ndarray] = {}  # the rows of attribute lists asked for before
        self._last_maps: dict[tuple, tuple[Any, np.ndarray, np.ndarray]] = {}  # the last call's maps, for ground()
        self._last_explained: dict[int, tuple[Any, Any, Any]] = {}

    @classmethod
    def from_checkpoint(cls, explainer: Explainer, checkpoint: str | Path | None = None, *, preprocess: Any = None,
                        feature_cache: FeatureCache | None = None, advice: str = "pass the checkpoint folder",
                        device: Any = "cpu") -> ExplainerSession:
        """The explainer with the network of ``checkpoint``, or of the checkpoint its metadata names, on ``device``.

        When the explainer recorded that checkpoint at fit and the folder still matches it (same
        recipe, same weights-file bytes), the network is built only when a forward pass needs it:
        explaining images whose features are in ``feature_cache`` builds none.
        """
        checkpoint = checkpoint or explainer.metadata_.get("checkpoint")
        if checkpoint is None:
            raise SaywhyError(f"the explainer does not name its network's checkpoint: {advice}")
        network = open_network(checkpoint, NetworkRecord.from_metadata(explainer.metadata_), device)
        return cls(explainer, network, preprocess, feature_cache=feature_cache)

    @property
    def model(self) -> nn.Module:
        """The network; a checkpoint's is built (and checked) the first time it is needed, not before."""
        return module_of(self._network)

    def _recorded_layers(self) -> LayerChoice | None:
        """The layers the explainer recorded for a lazy network that it matches; None to resolve them on the network.

        The network was opened against this explainer's record (:func:`~saywhy.model.lazy_network.open_network`),
        whose weights digest must be the explainer's, probed as this session would probe it.
        """
        network = self._network
        if not isinstance(network, LazyNetwork) or network.built:
            return None
        record = NetworkRecord.from_metadata(self.explainer.metadata_)
        if record != network.record or not record.usable(self.explainer.metadata_, self._probe_size().image_size,
                                                         network.device):
            return None
        return record.layers

    def _probe_size(self) -> Preprocess:
        size = getattr(self.preprocess, "image_size", None) or self.explainer.metadata_.get("preprocess", {}).get("image_size", 224)
        return Preprocess(image_size=int(size))

    def check_dataset(self, dataset: Dataset) -> Dataset:
        """Refuse a dataset whose classes are not the explainer's: its labels would be read wrongly."""
        require_same_classes([dataset.class_names[c] for c in dataset.class_ids], self.explainer.class_names_,
                             "the explainer", "pass the --root the explainer was fitted on, or fit one for this dataset")
        return dataset

    # ----- the network --------------------------------------------------------------------
    def activations(self, items: Sequence[Any], keep_maps: bool = False,
                    progress: bool = False, strict: bool = True, preprocess: Any = None) -> Activations:
        """Activations of ``items``; with ``strict`` an unreadable image is an error naming it,
        otherwise it is dropped (``Activations.index`` says which rows remain)."""
        preprocess = preprocess or self.preprocess
        cacheable = all(isinstance(i, (ImageRecord, str, Path)) for i in items) and isinstance(preprocess, Preprocess)
        if self.explainer.reads_maps and not keep_maps and self.feature_cache is not None and cacheable:
            acts = self._cached_map_rows(items, preprocess, progress)
        elif self.explainer.reads_maps and not keep_maps:
            acts = part_pooled_activations(self.explainer, self.model, items, preprocess, self.layers, progress)
        elif keep_maps:
            memo = self.map_memo is not None and cacheable
            key = (tuple(str(i.path if isinstance(i, ImageRecord) else i) for i in items), repr(preprocess)) \
                if memo else None
            acts = self.map_memo.get(key) if memo else None
            if acts is None:
                acts = extract_activations(self.model, items, preprocess, self.layers, keep_maps=True, progress=progress)
                if memo:
                    self.map_memo[key] = acts
            if self.explainer.reads_maps:  # phi(x), its part pools and peaks: what the explainer takes
                with one_blas_thread():  # an image's part pools are (groups x cells) by (cells x filters) products
                    rows = self.explainer.map_activations(acts.maps, acts.pooled)
                acts = dataclasses.replace(acts, pooled=np.asarray(rows, np.float32))  # as the feature cache keeps them
        else:
            lazy = isinstance(self._network, LazyNetwork)  # the explainer's copy of the head: the network's, exactly
            head = (self.explainer.head_weights_, self.explainer.head_bias_) if lazy else None
            acts = pooled_activations(self._network, items, preprocess, self.layers,
                                      self.feature_cache if cacheable else None, progress, head=head)
        if strict and acts.n_unreadable:
            readable = set(acts.index.tolist())
            for position, item in enumerate(items):
                if position not in readable:
                    open_image(item.path if isinstance(item, ImageRecord) else item)  # raises the clear error
        return acts

    def grad_cam(self, items: Sequence[Any], classes: Sequence[int] | None = None) -> np.ndarray:
        """Grad-CAM maps (N, h, w) of ``classes`` (default: the predicted ones), one backward pass per
        :data:`GRAD_CAM_BATCH` inputs: the graph a backward pass keeps grows with the batch (128 cub50
        images through EfficientNet-Lite0 held 8 GB, so ``evaluate`` peaked at 11 GB)."""
        import torch

        from saywhy.model.gradcam import grad_cam_maps

        inputs = ImageDataset(list(items), self.preprocess)
        out = []
        for start in range(0, len(inputs), GRAD_CAM_BATCH):
            rows = range(start, min(start + GRAD_CAM_BATCH, len(inputs)))
            images = torch.stack([inputs[i][0] for i in rows])
            out.append(grad_cam_maps(self.model, self.layers, images,
                                     None if classes is None else [classes[i] for i in rows]))
        return np.concatenate(out) if out else np.zeros((0, 0, 0), np.float32)

    # ----- explanations -------------------------------------------------------------------
    def explain(self, inputs: Any, target: Any = None, *, box: Any = None, heatmaps: bool | Sequence[str] = False,
                attributes: Sequence[str] | None = None, class_: Any = None, strict: bool = True) -> list[Explanation]:
        """Explain each input's decision (or ``target``'s): sentence, attributes, probabilities.

        ``box``: (x, y, w, h) for all inputs or one per input, used where the checkpoint
        was trained on box crops (records carry their dataset's box). ``heatmaps``: True
        for the listed attributes' eq. 9 maps, or a list of attributes to map;
        ``attributes``: more attributes to map besides the listed ones (implies heatmaps).
        Sentences, probabilities and every heatmap come from one forward pass, and the
        maps of a call over a few inputs are kept, so that :meth:`ground` on the same
        inputs (or on the explanations) runs none. ``strict=False`` skips unreadable
        files (each explanation names its input).

        >>> e = session.explain(images, heatmaps=True, attributes=["red crown"])   # doctest: +SKIP
        >>> e[0].heatmaps.attributes          # the five cited, then "red crown"   # doctest: +SKIP
        """
        target = class_ if target is None else target
        items, preprocess = self._boxed(as_items(inputs), box)
        if not items:
            raise SaywhyError("nothing to explain: give at least one image")
        extra = list(attributes or ())
        named = [] if heatmaps is True or not heatmaps else list(heatmaps)
        mapped = bool(heatmaps) or bool(extra)
        if named or extra:
            self.attribute_alphas(named + extra)  # an unknown attribute fails before the pass
        keep = mapped or (len(items) <= MEMO_ITEMS and not self._served_from_cache(items, preprocess))
        acts = self.activations(items, keep_maps=keep, strict=strict, preprocess=preprocess)
        kept = [items[i] for i in acts.index]
        with one_blas_thread():  # small products: a second BLAS thread would spin longer than they take
            explanations = self.explainer.explain(acts.pooled, self._targets(target, len(items), acts.index))
        if keep:
            self._remember(kept, preprocess, acts, explanations)
        groups: dict[tuple[str, ...], list[int]] = {}  # rows that map the same attributes: one product each
        for row, (item, explanation) in enumerate(zip(kept, explanations)):
            explanation.input = item_name(item, int(acts.index[row]))
            explanation.notes += self._notes(item)
            if mapped:
                cited = [t for t, _ in explanation.attributes] if heatmaps is True else named
                groups.setdefault(tuple(dict.fromkeys(cited + extra)), []).append(row)
        for wanted, rows in groups.items():
            maps = self._heatmap_rows([kept[r] for r in rows], acts.maps[rows], list(wanted),
                                      [explanations[r].class_index for r in rows], preprocess=preprocess)
            for row, heatmap in zip(rows, maps):
                explanations[row].heatmaps = heatmap
        return explanations

    def _cached_map_rows(self, items: Sequence[Any], preprocess: Preprocess, progress: bool) -> Activations:
        """The rows of an explainer that reads the maps (phi(x), part pools, peaks), from the feature cache's
        folder for exactly these part maps and settings (:meth:`Explainer.map_rows_key`), computed from the
        maps where not cached."""
        rows = MapRows(self.explainer.map_rows_key(), self.explainer.activation_width_,
                       one_blas_thread_call(self.explainer.map_activations),
                       PART_POOL_CHUNK)
        return pooled_activations(self._network, items, preprocess, self.layers, self.feature_cache, progress,
                                  head=(self.explainer.head_weights_, self.explainer.head_bias_), rows=rows)

    def _served_from_cache(self, items: Sequence[Any], preprocess: Any) -> bool:
        """Whether the activations of ``items`` can come from the feature cache (no forward pass needed):
        phi(x), or for an explainer that reads the maps, its rows made from them (:meth:`Explainer.map_rows_key`)."""
        return self.feature_cache is not None and isinstance(preprocess, Preprocess) \
            and all(isinstance(i, (ImageRecord, str, Path)) for i in items)

    def _remember(self, items: Sequence[Any], preprocess: Any, acts: Activations,
                  explanations: Sequence[Explanation] = ()) -> None:
        """Keep the maps of this call (only the last call's, and only if small) for :meth:`ground`."""
        self._last_maps, self._last_explained = {}, {}
        if acts.maps is None or acts.maps.nbytes > MEMO_BYTES:
            return
        where = repr(preprocess)
        keys = [_input_key(item) for item in items]
        for row, (item, key) in enumerate(zip(items, keys)):
            if key is not None:
                # the item itself is kept: a tensor's storage (or an image) cannot be freed and reused meanwhile
                self._last_maps[(where, key)] = (item, acts.maps[row], acts.pooled[row:row + 1])
        for row, explanation in enumerate(explanations):
            if keys[row] is not None:
                self._last_explained[id(explanation)] = (weakref.ref(explanation), items[row], preprocess)

    def _recall(self, item: Any, preprocess: Any) -> tuple[np.ndarray, np.ndarray] | None:
        key = _input_key(item)
        hit = self._last_maps.get((repr(preprocess), key)) if key is not None else None
        return None if hit is None else (hit[1], hit[2])

    def _boxed(self, items: list[Any], box: Any) -> tuple[list[Any], Any]:
        """Items with their boxes, and the preprocessing that applies them.

        A box given by the caller is always applied: the region is what is explained, even for
        a network trained on whole images. A network trained on box crops also takes the box
        its dataset records for a file (the explainer's ``dataset_root``).
        """
        preprocess = self.preprocess
        if box is not None:
            items = with_boxes(items, box)
            if isinstance(preprocess, Preprocess) and preprocess.crop != "bbox":
                preprocess = dataclasses.replace(preprocess, crop="bbox")
        elif getattr(preprocess, "crop", "none") == "bbox":
            known = self._dataset_boxes()
            items = [dataclasses.replace(known[key], is_train=False) if (key := _resolved(item)) in known else item
                     for item in items]
        return items, preprocess

    def _dataset_boxes(self) -> dict[str, ImageRecord]:
        """The explainer's dataset's records with a box, by resolved image path (read once; {} if absent)."""
        if self._known_boxes is None:
            self._known_boxes = {}
            root = self.explainer.metadata_.get("dataset_root")
            if root and Path(root).is_dir():
                from saywhy.data.cub import read_boxes

                try:
                    self._known_boxes = read_boxes(root)  # the boxes alone, not every caption file
                except (SaywhyError, OSError):
                    self._known_boxes = {}
        return self._known_boxes

    def _notes(self, item: Any) -> list[str]:
        if getattr(self.preprocess, "crop", "none") == "bbox" and not has_box(item):
            return ["the network was trained on box crops, but no box was given or known for this image: "
                    "the whole image was explained (pass box=(x, y, w, h) or --box)"]
        return []

    __call__ = explain

    def _targets(self, target: Any, n_items: int, kept: np.ndarray) -> Any:
        """One target for all, or the targets of the inputs that could be read (``Explainer.explain``
        turns names, indices and tensors into classes and checks them)."""
        if target is None or isinstance(target, (str, int)) or getattr(target, "ndim", None) == 0:
            return target
        targets = target.tolist() if hasattr(target, "tolist") else list(target)
        if len(targets) != n_items:
            raise SaywhyError(f"{len(targets)} targets for {n_items} images: give one class, or one per image")
        return [targets[i] for i in kept]

    def ground(self, item: Any, attributes: Sequence[str], *, box: Any = None) -> Heatmaps:
        """Where each attribute is in one image (eq. 9), from one forward pass, or none.

        ``item`` is one image (anything :meth:`explain` takes) or an :class:`Explanation`
        from :meth:`explain`. Maps the explanation already holds, or that the session's
        last call computed for the same input (same tensor data, image, or file content),
        are reused: ``explain`` then ``ground`` costs one forward pass. The CAM is the
        explanation's class, else the network's.

        >>> e = session.explain("bird.jpg")[0]                            # doctest: +SKIP
        >>> session.ground(e, ["red crown", "black wing"]).peaks()        # no second forward  # doctest: +SKIP
        """
        attributes = list(attributes)
        alpha = self.attribute_alphas(attributes)  # unknown attributes fail before the pass
        class_index = None
        if isinstance(item, Explanation):
            known = item.heatmaps
            if isinstance(known, Heatmaps) and all(t in known.attributes for t in attributes):
                return known.select(attributes)
            class_index = item.class_index
            seen = self._last_explained.get(id(item))
            if seen is not None and seen[0]() is item:
                item, preprocess = seen[1], seen[2]
                hit = self._recall(item, preprocess)
                if hit is not None:
                    return self._heatmaps(item, hit[0], attributes, class_index, alpha, preprocess)
                box = None  # the item carries the box it was explained with
            elif Path(item.input).is_file():
                item = Path(item.input)
            else:
                raise SaywhyError(f"the input of this explanation ({item.input}) is not at hand: pass the image itself, "
                                  "or explain it with heatmaps=... for the attributes")
        items, preprocess = self._boxed(as_items(item), box)
        if len(items) != 1:
            raise SaywhyError(f"ground maps one image at a time, got {len(items)}")
        hit = self._recall(items[0], preprocess)
        if hit is None:
            acts = self.activations(items, keep_maps=True, strict=True, preprocess=preprocess)
            self._remember(items, preprocess, acts)
            hit = (acts.maps[0], acts.pooled)
        maps, pooled = hit
        if class_index is None:
            class_index = int(self.explainer.predict(pooled)[0])
        return self._heatmaps(items[0], maps, attributes, class_index, alpha, preprocess)

    def attribute_alphas(self, attributes: Sequence[str]) -> np.ndarray:
        """(T, F) eq. 9 weights of the named attributes; an unknown one is refused with the closest known."""
        key = tuple(attributes)
        known = self._alpha_rows.get(key)
        if known is not None:
            return known
        columns = query_indices(self.explainer, attributes)
        if self._alphas is None:  # the explainer's fitted state is read-only: computed once per session
            self._alphas = np.ascontiguousarray(self.explainer.grounding_alphas().T)  # rows: a few are read at a time
        rows = self._alphas[columns]
        rows.flags.writeable = False  # handed out again for the same attributes
        if len(self._alpha_rows) >= ALPHA_MEMO:
            self._alpha_rows.clear()
        self._alpha_rows[key] = rows
        return rows

    def _heatmaps(self, item: Any, maps: np.ndarray, attributes: list[str], class_index: int,
                  alpha: np.ndarray | None = None, preprocess: Any = None) -> Heatmaps:
        return self._heatmap_rows([item], np.asarray(maps)[None], attributes, [class_index], alpha, preprocess)[0]

    def _heatmap_rows(self, items: Sequence[Any], maps: np.ndarray, attributes: list[str], class_indices: Sequence[int],
                      alpha: np.ndarray | None = None, preprocess: Any = None) -> list[Heatmaps]:
        """The same attributes' heatmaps (and each image's CAM) on N images' (N, F, h, w) maps, by one
        matrix product for all of them: 32 images' five heatmaps cost what one image's did, call by call.
        The products run in float32, the maps' own precision (a float64 copy of 32 demo images' maps
        cost more than the products); the maps returned are float64."""
        preprocess = preprocess or self.preprocess
        alpha = self.attribute_alphas(attributes) if alpha is None else alpha
        maps = np.asarray(maps, np.float32)
        n, f, h, w = maps.shape
        with one_blas_thread():
            layer = self.explainer.grounding_scores(maps, np.asarray(alpha, np.float32), list(attributes))  # eq. 9
            head = self.explainer.head_weights_[np.asarray(class_indices, dtype=np.intp)]  # (N, F): each one's class
            cam = np.matmul(head.astype(np.float32)[:, None, :], maps.reshape(n, f, h * w)).reshape(n, h, w)
        layer, cam = np.asarray(layer, np.float64), cam.astype(np.float64)
        return [Heatmaps(list(attributes), layer[i], cam[i], *self._seen_box(item, preprocess), int(class_indices[i]))
                for i, item in enumerate(items)]

    @staticmethod
    def _seen_box(item: Any, preprocess: Any) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
        """(the box of the input the network saw, the input's (W, H)): files read their header only."""
        if isinstance(item, (ImageRecord, str, Path)):
            size = image_size(item.path if isinstance(item, ImageRecord) else item)  # upright, from the header
            box = preprocess.seen_box(size, item.bbox if isinstance(item, ImageRecord) else None) \
                if isinstance(preprocess, Preprocess) else (0, 0, *size)
            return box, size
        if isinstance(item, Image.Image):
            return (0, 0, *item.size), item.size
        size = (int(item.shape[-1]), int(item.shape[-2]))
        return (0, 0, *size), size

    def contrast(self, item: Any, other: str | int, class_: str | int | None = None, *, box: Any = None) -> Contrast:
        """Why the network's class (or ``class_``) and not ``other``, for one image."""
        items, preprocess = self._boxed(as_items(item), box)
        if len(items) != 1:
            raise SaywhyError(f"a contrast explains one image at a time, got {len(items)}: contrast each on its own")
        acts = self.activations(items, preprocess=preprocess)
        mine = self.explainer.predict(acts.pooled)[0] if class_ is None else self.explainer.class_index(class_)
        return self.explainer.contrast(acts.pooled, int(mine), other)

    def describe(self, class_: str | int) -> ClassDescription:
        """What the network looks for in a class (eq. 7-8)."""
        return self.explainer.describe(class_)

    def search(self, attributes: Sequence[str], images: Any, top: int | None = 20) -> SearchResult:
        """Rank ``images`` (paths, a folder, records, PIL images or tensors) for the attributes (Figure 6):
        by the sum of log p(t|x,c) over them, c the network's class; each hit shows the readable scores."""
        return search_images(self, as_items(images), attributes, top=top)


def _resolved(item: Any) -> str | None:
    if isinstance(item, (str, Path)):
        try:
            return str(Path(item).resolve())
        except OSError:
            return None
    return None


def _input_key(item: Any) -> tuple | None:
    """What identifies one input's pixels: a tensor's storage, shape and in-place version; a PIL
    image's bytes; a file's resolved path, size, time and box. None for what cannot be identified."""
    if is_tensor(item):
        return ("tensor", item.data_ptr(), tuple(item.shape), tuple(item.stride()), item._version, item.dtype,
                str(item.device))
    if isinstance(item, Image.Image):
        return ("image", id(item), item.mode, item.size, hash(item.tobytes()))
    path, bbox = (item.path, item.bbox) if isinstance(item, ImageRecord) else (item, None)
    try:
        resolved = Path(path).resolve()
        stat = resolved.stat()
    except (OSError, TypeError):
        return None
    return ("file", str(resolved), stat.st_size, stat.st_mtime_ns, bbox)
