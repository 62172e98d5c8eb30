"""Fitting in parts: ``saywhy extract --shard K/N`` on as many machines as there are shards,
then ``saywhy fit --from-shards`` reads the parts back chunk by chunk.

A shard is the K-th of N contiguous slices of the fitting images (the training images
with captions or attributes, in the dataset's order). Its folder holds the pooled
features of its readable images (``features.safetensors``, float32), their attribute
phrases and captions (``documents.json``), and ``shard.json``: what made it (weights
digest, layers, preprocessing, the dataset's image list) and the additive statistics
known before the vocabulary is: the phrases' document frequencies, the image count, the
images the network gets right.

The merge is exact by construction: the fit reads the shards in order, chunk by chunk,
and every statistic of eq. 1-4 is a sum (of integers with the default sigma "top"), a
maximum, or a set of largest values per filter (``core.filter_attribute.TopValues``), so
N shards give the single run's statistics bit for bit; the evidence model's float sums
agree to rounding. Features are read ``CHUNK_ROWS`` at a time from the files, never all
at once; the documents are read per shard.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors import safe_open
from safetensors.numpy import save_file
from torch import nn

from saywhy.data.images import Preprocess
from saywhy.data.records import Dataset, ImageRecord
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig
from saywhy.files import atomic_folder
from saywhy.model.checkpoint import weights_digest
from saywhy.model.feature_cache import FeatureCache
from saywhy.pipeline import (
    FitReport,
    caption_phrases,
    check_fit_classes,
    fitting_records,
    head_parameters,
    image_documents,
    near_chance_warning,
    pooled_activations,
    resolve_layers,
)
from saywhy.text.phrases import PhraseExtractor
from saywhy.text.surface import learn_surface_forms
from saywhy.text.synonyms import SynonymGroups, learn_synonyms
from saywhy.text.vocabulary import AttributeVocabulary

SHARD_FORMAT = 2  # 2: each caption's phrases too, what synonym groups are learned from
CHUNK_ROWS = 4096


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 0 <= K < N.

    >>> parse_shard("2/8")
    (2, 8)
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not int(match[1]) < int(match[2]):
        raise SaywhyError(f"a shard is K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
    return int(match[1]), int(match[2])


def shard_slice(n_images: int, k: int, n: int) -> slice:
    """The K-th of N contiguous, nearly equal slices of ``n_images`` (together: all of them, once)."""
    return slice(k * n_images // n, (k + 1) * n_images // n)


def dataset_key(records: Sequence[ImageRecord]) -> str:
    """Which images, in which order: the same list gives the same key on every machine."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(f"{r.image_id}\0{Path(r.path).name}\0{r.class_id}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class ShardPart:
    """One process's part of the fitting images, in memory: what a shard folder holds."""

    pooled: np.ndarray  # (images, filters) float32
    documents: list[list[str]]
    captions: list[list[str]]
    per_caption: list[list[list[str]]] | None  # per image, per caption, its phrases (captions only)
    labels: np.ndarray  # class index of each image
    correct: int  # images the network puts in their class
    meta: dict[str, Any]


def extract_part(dataset: Dataset, model: nn.Module, preprocess: Preprocess, k: int, n: int,
                 source: str = "captions", extractor: PhraseExtractor | None = None, layer: str | None = None,
                 head: str | None = None, feature_cache: FeatureCache | None = None, progress: bool = True,
                 model_classes: Sequence[str] | None = None) -> ShardPart:
    """Run the network and the phrase parser on shard ``k`` of ``n`` of the fitting images."""
    layers = resolve_layers(model, preprocess, layer, head)
    class_names = check_fit_classes(dataset, layers, model_classes)
    records, report = fitting_records(dataset, source)
    part = records[shard_slice(len(records), k, n)]
    acts = pooled_activations(model, part, preprocess, layers, feature_cache, progress)
    if not np.isfinite(acts.pooled).all():
        raise SaywhyError("the network's activations contain NaN or infinite numbers: check its weights "
                          "(a damaged checkpoint?) and the preprocessing")
    kept = [part[i] for i in acts.index]
    documents = image_documents(kept, source, extractor)
    labels = np.array([dataset.class_index(r.class_id) for r in kept], dtype=np.int64)
    frequency = Counter(term for document in documents for term in set(document))
    meta = {
        "format": SHARD_FORMAT, "shard": [k, n], "fitting_images": len(records), "images": len(kept),
        "unreadable": acts.n_unreadable, "skipped": report.skipped if k == 0 else {},
        "dataset_key": dataset_key(records), "dataset_root": str(dataset.root), "source": source,
        "layer": layers.feature_layer, "head": layers.head, "preprocess": preprocess.to_dict(),
        "weights_digest": weights_digest(model), "class_names": class_names, "document_frequency": dict(sorted(frequency.items())),
    }
    correct = int(np.sum(acts.logits.argmax(axis=1) == labels)) if len(kept) else 0
    meta["correct"] = correct
    per_caption = caption_phrases(kept, extractor) if source == "captions" else None
    return ShardPart(np.asarray(acts.pooled, np.float32), documents, [list(r.captions or ()) for r in kept],
                     per_caption, labels, correct, meta)


def write_shard(part: ShardPart, out: str | Path) -> Path:
    """Write a part as a shard folder (whole or not at all)."""
    with atomic_folder(out, "shard") as tmp:
        save_file({"pooled": np.ascontiguousarray(part.pooled, np.float32), "labels": part.labels}, tmp / "features.safetensors")
        (tmp / "documents.json").write_text(json.dumps({"documents": part.documents, "captions": part.captions,
                                                          "per_caption": part.per_caption}))
        (tmp / "shard.json").write_text(json.dumps(part.meta, indent=1))
    return Path(out)


def read_shard_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / "shard.json").read_text())
    except (OSError, ValueError) as error:
        raise SaywhyError(f"{folder} is not a shard folder ('saywhy extract --shard K/N --out ...' writes one): "
                          f"{type(error).__name__}") from None
    if meta.get("format") != SHARD_FORMAT:
        raise SaywhyError(f"{folder}: shard format {meta.get('format')!r}, this saywhy reads {SHARD_FORMAT}: "
                          "extract it again with this version")
    return meta


def check_shards(folders: Sequence[str | Path], model: nn.Module) -> list[tuple[Path, dict[str, Any]]]:
    """The shards in order, refused unless they are K = 0..N-1 of one extraction by this network."""
    shards = [(Path(f), read_shard_meta(Path(f))) for f in folders]
    if not shards:
        raise SaywhyError("no shard folders given")
    first = shards[0][1]
    total = first["shard"][1]
    same = ("dataset_key", "class_names", "layer", "head", "preprocess", "weights_digest", "source")
    for folder, meta in shards:
        differ = [name for name in same if meta.get(name) != first.get(name)] + (["N"] if meta["shard"][1] != total else [])
        if differ:
            raise SaywhyError(f"{folder} is from another extraction than {shards[0][0]} (its {', '.join(differ)} "
                              "differ): give the N shards of one 'saywhy extract' run")
    if first["weights_digest"] != weights_digest(model):
        raise SaywhyError("the shards were extracted with other network weights than this checkpoint's: "
                          "give the checkpoint they were extracted with, or extract again")
    have = Counter(meta["shard"][0] for _, meta in shards)
    missing = [k for k in range(total) if k not in have]
    twice = sorted(k for k, c in have.items() if c > 1)
    if missing or twice:
        raise SaywhyError(f"shards of {total}: " + (f"missing {', '.join(f'{k}/{total}' for k in missing)}" if missing else "")
                          + ("; " if missing and twice else "") + (f"given twice {twice}" if twice else "")
                          + ": give each K/N once")
    return sorted(shards, key=lambda s: s[1]["shard"][0])


def shard_chunks(shards: Sequence[tuple[Path, dict[str, Any]]], counts: Sequence[sp.csr_matrix],
                 rows: int = CHUNK_ROWS):
    """A FitChunks source over shard files: ``rows`` features at a time, read from disk each pass."""
    def chunks() -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
        for (folder, meta), shard_counts in zip(shards, counts):
            if not meta["images"]:
                continue
            with safe_open(str(folder / "features.safetensors"), framework="numpy") as handle:
                pooled = handle.get_slice("pooled")
                for start in range(0, meta["images"], rows):
                    stop = min(start + rows, meta["images"])
                    yield pooled[start:stop], shard_counts[start:stop]
    return chunks


def _documents(folder: Path) -> dict[str, list[list[str]]]:
    return json.loads((folder / "documents.json").read_text())


def merged_vocabulary(config: ExplainerConfig, per_caption: list[list[list[str]]] | None,
                      frequencies: Sequence[Mapping[str, int]], n_images: int,
                      documents: Callable[[], list[list[str]]], synonyms: SynonymGroups | None = None
                      ) -> tuple[SynonymGroups, AttributeVocabulary]:
    """The synonym groups (None: learned from every part's ``per_caption``) and the vocabulary of
    parts of one fit: their document ``frequencies`` add up when nothing is merged; merged phrases
    count once per document, so then it is counted again from all ``documents()``."""
    if synonyms is None:
        synonyms = learn_synonyms(per_caption) if per_caption is not None else SynonymGroups([], "none")
    if synonyms.groups:
        return synonyms, AttributeVocabulary(min_df=config.min_df, synonyms=synonyms).fit(documents())
    frequency: Counter[str] = Counter()
    for table in frequencies:
        frequency.update(table)
    return synonyms, AttributeVocabulary(min_df=config.min_df).fit_frequencies(frequency, n_images)


def fit_from_shards(folders: Sequence[str | Path], model: nn.Module, config: ExplainerConfig = ExplainerConfig(),
                    metadata: dict[str, Any] | None = None, rows: int = CHUNK_ROWS,
                    synonyms: SynonymGroups | None = None) -> tuple[Explainer, FitReport]:
    """The explainer :func:`saywhy.pipeline.fit_explainer` would fit, from the N shards of one extraction
    (``synonyms`` as there: None learns them from every shard's captions)."""
    shards = check_shards(folders, model)
    first = shards[0][1]
    preprocess = Preprocess.from_dict(first["preprocess"])
    layers = resolve_layers(model, preprocess, first["layer"], first["head"])
    n_images = sum(meta["images"] for _, meta in shards)
    per_caption = None
    if first["source"] == "captions":
        per_caption = [image for folder, _ in shards for image in _documents(folder)["per_caption"]]
    synonyms, vocabulary = merged_vocabulary(
        config, per_caption, [meta["document_frequency"] for _, meta in shards], n_images,
        lambda: [d for folder, _ in shards for d in _documents(folder)["documents"]], synonyms)
    # Term counts are sparse (images x attributes, nonzeros only): kept for the fit's passes.
    counts = [vocabulary.transform(_documents(folder)["documents"]) for folder, _ in shards]
    weights, bias = head_parameters(model, layers)
    class_names = first["class_names"]
    if len(class_names) != weights.shape[0]:
        raise SaywhyError(f"the shards' dataset has {len(class_names)} classes but the network predicts "
                          f"{weights.shape[0]}: give the checkpoint they were extracted with")
    report = FitReport(skipped=dict(first["skipped"]))
    unreadable = sum(meta["unreadable"] for _, meta in shards)
    if unreadable:
        report.skipped["unreadable images"] = unreadable
    report.accuracy = sum(meta["correct"] for _, meta in shards) / n_images if n_images else None
    near_chance_warning(report, weights.shape[0])
    captions = (c for folder, _ in shards for caps in _documents(folder)["captions"] for c in caps)
    merged = None if per_caption is None else [[synonyms.terms(c) for c in image] for image in per_caption]
    forms = learn_surface_forms(captions if first["source"] == "captions" else (), vocabulary.terms_, merged)
    meta = {
        "layer": layers.feature_layer, "head": layers.head, "preprocess": preprocess.to_dict(),
        "weights_digest": first["weights_digest"], "source": first["source"], "dataset_root": first["dataset_root"],
        "images_used": n_images, "skipped": report.skipped, "fit_accuracy": report.accuracy,
        "warnings": report.warnings, "shards": len(shards), **(metadata or {}),
    }
    explainer = Explainer(config).fit_chunks(shard_chunks(shards, counts, rows), vocabulary.terms_, weights,
                                             list(class_names), bias, meta, surface_forms=forms, synonyms=synonyms)
    report.images_used, report.vocabulary_size = n_images, len(vocabulary.terms_)
    return explainer, report
