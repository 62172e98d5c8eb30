"""``torchrun --nproc-per-node N -m saywhy fit ...``: one fit across processes, GPUs or machines.

Each rank extracts its contiguous slice of the fitting images (the shard K/N of
``saywhy.shards``, K = rank, N = world size) and parses its captions; the vocabulary comes
from the all-gathered document frequencies; every statistic of the fit is then added up
across ranks (:class:`RankCombine`): eq. 1-4's sums and the prior's counts by
all-reduce, the per-filter maximum by an all-reduce of MAX, the top-fraction thresholds
from each rank's largest values (all-gathered, merged the same way on every rank). The
evidence fit's L-BFGS runs on rank 0: for each step it broadcasts the block's parameters,
every rank computes its images' loss and gradient, and an all-reduce adds them up. Only
rank 0 writes the explainer.

The backend is NCCL when each rank has a GPU, else gloo (CPU); ``torchrun`` sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from saywhy.core.attribute_evidence import AttributeEvidence, EvidenceLoss, EvidenceMoments, fit_evidence_blocks
from saywhy.core.filter_attribute import TopValues
from saywhy.errors import SaywhyError
from saywhy.explain.attribute_models import Combine
from saywhy.explain.explainer import Explainer, ExplainerConfig
from saywhy.pipeline import FitReport, head_parameters, near_chance_warning, resolve_layers
from saywhy.shards import ShardPart, extract_part, merged_vocabulary
from saywhy.text.surface import learn_surface_forms

_STOP, _EVALUATE = 0, 1


def launched() -> bool:
    """True inside a ``torchrun`` launch of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(backend: str | None = None) -> torch.device:
    """Join the process group torchrun described; the device this rank computes on."""
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise SaywhyError(f"--distributed needs the process group torchrun sets up ({', '.join(missing)} not set): "
                              "run 'torchrun --nproc-per-node N -m saywhy fit ...'")
        dist.init_process_group(backend)
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


class RankCombine(Combine):
    """Adds every rank's sums up (all ranks call each method in the same order)."""

    def __init__(self, device: torch.device = torch.device("cpu")):
        self.device = device

    def _reduce(self, array: np.ndarray, op: Any) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(array, np.float64)).to(self.device)
        dist.all_reduce(tensor, op=op)
        return tensor.cpu().numpy()

    def sum(self, array):
        return self._reduce(array, dist.ReduceOp.SUM)

    def max(self, array):
        return self._reduce(array, dist.ReduceOp.MAX)

    def top_values(self, top: TopValues) -> TopValues:
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (top.kept, top.lowest, top.seen))
        merged = TopValues(top.n_images, len(top.lowest), top.fraction)
        for kept, lowest, seen in parts:  # rank order, so every rank merges the same way
            merged.merge(TopValues.from_kept(top.n_images, top.fraction, kept, lowest, seen))
        return merged

    def fit_evidence(self, loss: EvidenceLoss, moments: EvidenceMoments, l2: float) -> AttributeEvidence:
        n_filters = len(moments.mean)
        if dist.get_rank() == 0:
            def evaluate(lo: int, hi: int, a: np.ndarray, b: np.ndarray):
                self._broadcast(np.array([_EVALUATE, lo, hi], np.float64))
                self._broadcast(np.concatenate([a.ravel(), b]))
                return self._evaluate(loss, lo, hi, a, b)

            evidence = fit_evidence_blocks(evaluate, moments, l2)
            self._broadcast(np.array([_STOP, 0, 0], np.float64))
            arrays = self._broadcast(np.concatenate([evidence.weights.ravel(), evidence.bias]))
        else:
            while True:
                command, lo, hi = (int(v) for v in self._broadcast(np.zeros(3)))
                if command == _STOP:
                    break
                size = hi - lo
                theta = self._broadcast(np.zeros(size * (n_filters + 1)))
                self._evaluate(loss, lo, hi, theta[: size * n_filters].reshape(size, n_filters), theta[size * n_filters:])
            arrays = self._broadcast(np.zeros(len(moments.present) * (n_filters + 1)))
        t = len(moments.present)  # every rank returns rank 0's model
        return AttributeEvidence(arrays[: t * n_filters].reshape(t, n_filters), arrays[t * n_filters:])

    def _evaluate(self, loss: EvidenceLoss, lo: int, hi: int, a: np.ndarray, b: np.ndarray):
        value, grad_a, grad_b = loss(lo, hi, a, b)
        total = self.sum(np.concatenate([[value], grad_a.ravel(), grad_b]))
        return float(total[0]), total[1:1 + grad_a.size].reshape(grad_a.shape), total[1 + grad_a.size:]

    def _broadcast(self, array: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(array, np.float64)).to(self.device)
        dist.broadcast(tensor, src=0)
        return tensor.cpu().numpy()


def fit_parts(part: ShardPart, model: torch.nn.Module, config: ExplainerConfig, combine: Combine,
              n_parts: int, metadata: dict[str, Any] | None = None, rows: int = 4096) -> tuple[Explainer, FitReport]:
    """Fit one explainer from every rank's :class:`ShardPart` (each rank passes its own)."""
    gathered: list[Any] = [None] * n_parts
    dist.all_gather_object(gathered, (part.meta["document_frequency"], part.meta["images"], part.meta["correct"],
                                      part.meta["unreadable"], part.captions, part.meta["skipped"],
                                      part.per_caption, part.documents))
    n_images = sum(g[1] for g in gathered)
    # Synonym groups are learned from every rank's captions (as fit_explainer learns them from all);
    # merged phrases count once per document, so the vocabulary is counted again from the documents.
    per_caption = [image for g in gathered for image in g[6]] if part.meta["source"] == "captions" else None
    synonyms, vocabulary = merged_vocabulary(config, per_caption, [g[0] for g in gathered], n_images,
                                             lambda: [d for g in gathered for d in g[7]])
    counts = vocabulary.transform(part.documents)
    preprocess_layers = resolve_layers(model, _preprocess(part.meta), part.meta["layer"], part.meta["head"])
    weights, bias = head_parameters(model, preprocess_layers)
    report = FitReport(skipped=dict(gathered[0][5]))  # shard 0 counts the images without captions
    unreadable = sum(g[3] for g in gathered)
    if unreadable:
        report.skipped["unreadable images"] = unreadable
    report.accuracy = sum(g[2] for g in gathered) / n_images if n_images else None
    near_chance_warning(report, weights.shape[0])
    captions = [c for g in gathered for caps in g[4] for c in caps] if part.meta["source"] == "captions" else []
    merged = None if per_caption is None else [[synonyms.terms(c) for c in image] for image in per_caption]
    forms = learn_surface_forms(captions, vocabulary.terms_, merged)
    meta = {
        "layer": part.meta["layer"], "head": part.meta["head"], "preprocess": part.meta["preprocess"],
        "weights_digest": part.meta["weights_digest"], "source": part.meta["source"],
        "dataset_root": part.meta["dataset_root"], "images_used": n_images, "skipped": report.skipped,
        "fit_accuracy": report.accuracy, "warnings": report.warnings, "processes": n_parts, **(metadata or {}),
    }
    pooled = part.pooled

    def chunks():
        return ((pooled[i:i + rows], counts[i:i + rows]) for i in range(0, len(pooled), rows))

    explainer = Explainer(config).fit_chunks(chunks, vocabulary.terms_, weights, part.meta["class_names"], bias, meta,
                                             surface_forms=forms, combine=combine, synonyms=synonyms)
    report.images_used, report.vocabulary_size = n_images, len(vocabulary.terms_)
    return explainer, report


def _preprocess(meta: dict[str, Any]):
    from saywhy.data.images import Preprocess

    return Preprocess.from_dict(meta["preprocess"])


def fit_distributed(dataset, model: torch.nn.Module, preprocess, config: ExplainerConfig = ExplainerConfig(),
                    source: str = "captions", extractor=None, layer: str | None = None, head: str | None = None,
                    metadata: dict[str, Any] | None = None, progress: bool = False, feature_cache=None,
                    model_classes: Sequence[str] | None = None, device: torch.device | None = None,
                    ) -> tuple[Explainer, FitReport]:
    """:func:`saywhy.pipeline.fit_explainer` across the ranks of an initialized process group.

    Every rank returns the same explainer; only rank 0 should save it.
    """
    device = device or torch.device("cpu")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = model.to(device)
    part = extract_part(dataset, model, preprocess, rank, world, source, extractor, layer, head, feature_cache,
                        progress and rank == 0, model_classes)
    return fit_parts(part, model.cpu(), config, RankCombine(device), world, metadata)
