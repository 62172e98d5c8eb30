"""Fine-tune the head only: a linear classifier fitted on frozen pooled features.

The network's convolutional part stays as pretrained; its pooled features phi(f(x))
(the head's input, exactly what the paper's eq. 5-8 read) are computed once, cached,
and a softmax regression is fitted on them with full-batch L-BFGS. The fitted weights
are written into the network's own linear head, so the result is an ordinary
global-pooling + linear model that ``load_checkpoint`` rebuilds and the explainer reads.

The L2 strength is chosen on a stratified held-out part of the training split, then
the head is refitted on the whole split; the test split is only ever scored.

Deviation from the paper: it fine-tunes all of ResNet-50 on CUB; here only the head
is trained (minutes on a CPU instead of GPU hours), so the filters f_k the explainer
reads are ImageNet's, unchanged by the birds.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from saywhy.data.images import Preprocess
from saywhy.data.records import Dataset, ImageRecord
from saywhy.errors import SaywhyError
from saywhy.model.activations import extract_activations
from saywhy.model.feature_cache import CachedFeatures, FeatureCache
from saywhy.model.hooks import get_module
from saywhy.model.layers import LayerChoice, find_layers


@dataclass(frozen=True)
class ProbeConfig:
    """How the head is fitted; stored in the checkpoint's metadata."""

    weight_decays: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)  # L2 on standardized features
    validation_fraction: float = 0.2
    max_iter: int = 300
    seed: int = 0


class LinearProbe:
    """Softmax regression with an L2 penalty, fitted by full-batch L-BFGS (scikit-learn style).

    Features are standardized inside; ``coef_`` and ``intercept_`` act on raw features,
    so they can be copied straight into the network's head.

    >>> x = np.array([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]])
    >>> probe = LinearProbe(weight_decay=1e-3).fit(x, np.array([0, 0, 1, 1]))
    >>> probe.predict(np.array([[0.05, 0.95], [0.95, 0.1]])).tolist()
    [0, 1]
    """

    def __init__(self, weight_decay: float | None = None, config: ProbeConfig = ProbeConfig()):
        self.weight_decay = weight_decay  # None: chosen from config.weight_decays on held-out data
        self.config = config

    def fit(self, features: np.ndarray, labels: np.ndarray, n_classes: int | None = None) -> LinearProbe:
        features, labels = np.asarray(features, np.float32), np.asarray(labels, int)
        if len(features) != len(labels) or len(features) == 0:
            raise SaywhyError(f"cannot fit a head on {len(features)} feature rows and {len(labels)} labels")
        n_classes = int(n_classes or labels.max() + 1)
        self.validation_accuracy_: dict[float, float] = {}
        fit_part, held_out = stratified_split(labels, self.config.validation_fraction, self.config.seed)
        if self.weight_decay is None and len(held_out):
            # Strongest penalty first, each fit starting from the previous solution: fewer L-BFGS steps.
            start = None
            for decay in sorted(self.config.weight_decays, reverse=True):
                start = fit_softmax(features[fit_part], labels[fit_part], n_classes, decay, self.config.max_iter, init=start)
                predicted = (features[held_out] @ start[0].T + start[1]).argmax(1)
                self.validation_accuracy_[decay] = float((predicted == labels[held_out]).mean())
            # Ties go to the stronger penalty: the simpler head.
            self.weight_decay_ = max(self.validation_accuracy_, key=lambda d: (self.validation_accuracy_[d], d))
        else:  # given, or nothing to hold out (one image per class): the grid's middle
            grid = self.config.weight_decays
            self.weight_decay_ = float(self.weight_decay if self.weight_decay is not None else grid[len(grid) // 2])
        self.coef_, self.intercept_ = fit_softmax(features, labels, n_classes, self.weight_decay_, self.config.max_iter)
        return self

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise SaywhyError("the linear probe is not fitted yet: call fit(features, labels) first")
        return np.asarray(features, np.float32) @ self.coef_.T + self.intercept_

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.decision_function(features).argmax(1)

    def score(self, features: np.ndarray, labels: np.ndarray) -> float:
        return float((self.predict(features) == np.asarray(labels)).mean()) if len(labels) else float("nan")

    def install(self, model: nn.Module, head: str) -> nn.Linear:
        """Copy ``coef_`` and ``intercept_`` into the linear layer ``head`` of ``model``."""
        layer = get_module(model, head)
        if not isinstance(layer, nn.Linear) or layer.bias is None:
            raise SaywhyError(f"layer {head!r} is not a linear layer with a bias: cannot install the fitted head")
        if tuple(layer.weight.shape) != self.coef_.shape:
            raise SaywhyError(f"head {head!r} has shape {tuple(layer.weight.shape)} but the fitted head is {self.coef_.shape}: "
                              "build the network with as many classes as the dataset")
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(self.coef_))
            layer.bias.copy_(torch.from_numpy(self.intercept_))
        return layer


def fit_softmax(features: np.ndarray, labels: np.ndarray, n_classes: int, weight_decay: float, max_iter: int = 300,
                init: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Minimise mean cross-entropy + weight_decay/2 * ||W||^2 on standardized features.

    Returns (coef (C, F), intercept (C,)) for the raw features: standardization
    x' = (x - mu) / s is folded in as W' = W / s, b' = b - W' mu. ``init`` is a
    starting (coef, intercept), also for raw features (a warm start); zeros otherwise.
    """
    x = torch.from_numpy(np.asarray(features, np.float32))
    y = torch.from_numpy(np.asarray(labels, np.int64))
    mu, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mu) / scale
    if init is None:
        weight, bias = torch.zeros(n_classes, x.shape[1]), torch.zeros(n_classes)
    else:
        coef0, intercept0 = (torch.from_numpy(np.asarray(a, np.float32)) for a in init)
        weight, bias = coef0 * scale, intercept0 + coef0 @ mu
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(x @ weight.T + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with _one_thread():
        optimizer.step(closure)
    with torch.no_grad():
        coef = weight / scale
        intercept = bias - coef @ mu
    return coef.numpy().astype(np.float32), intercept.numpy().astype(np.float32)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread for the duration: the head's problem is small (about 1e8
    flops a step), and on the busy 2-core test machine thread synchronisation made the
    cub50 head fit take 60-90 s on two threads against 5 s on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, held out): about ``fraction`` of each class held out, none from a class of one."""
    rng = np.random.default_rng(seed)
    fit_part, held_out = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_out = round(fraction * len(members)) if len(members) > 1 else 0
        n_out = min(max(n_out, 1 if len(members) > 1 else 0), len(members) - 1)
        held_out.extend(members[:n_out])
        fit_part.extend(members[n_out:])
    return np.sort(np.asarray(fit_part, int)), np.sort(np.asarray(held_out, int))


def head_training_split(dataset: Dataset, n_outputs: int) -> tuple[dict[int, int], list, list]:
    """(class id -> output index, training records, test records) for training a head of
    ``n_outputs`` on ``dataset``; refused in one line when the head does not have one output per
    class or the dataset has no training images."""
    if n_outputs != len(dataset.class_ids):
        raise SaywhyError(f"the network's head has {n_outputs} outputs but the dataset has "
                          f"{len(dataset.class_ids)} classes: build it with n_classes={len(dataset.class_ids)}")
    train_records, test_records = dataset.split(True), dataset.split(False)
    if not train_records:
        raise SaywhyError(f"{dataset.root} has no training images (train_test_split.txt marks none with 1)")
    return {cid: i for i, cid in enumerate(dataset.class_ids)}, train_records, test_records


def fit_head(
    model: nn.Module,
    dataset: Dataset,
    preprocess: Preprocess,
    cache: FeatureCache | None = None,
    probe: LinearProbe | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Fit the network's linear head on the training split's cached features; score the test split.

    The model must already have a head with one output per class of ``dataset``
    (``build_pretrained(name, len(dataset.class_ids))``). Returns the report that goes
    into the checkpoint's metadata.
    """
    probe = probe or LinearProbe()
    device = next(model.parameters()).device
    layers = find_layers(model, torch.zeros(1, 3, preprocess.image_size, preprocess.image_size, device=device))
    index_of, train_records, test_records = head_training_split(dataset, layers.n_classes)
    train = _features(model, train_records, preprocess, layers, cache, batch_size, progress)
    test = _features(model, test_records, preprocess, layers, cache, batch_size, progress)
    y_train = np.array([index_of[train_records[i].class_id] for i in train.index], int)
    y_test = np.array([index_of[test_records[i].class_id] for i in test.index], int)
    if not len(y_train):
        raise SaywhyError(f"none of the {len(train_records)} training images could be read: check {dataset.root}/images")

    started = time.perf_counter()
    probe.fit(train.pooled, y_train, n_classes=len(dataset.class_ids))
    train_seconds = time.perf_counter() - started
    probe.install(model, layers.head)
    check = test if len(test.index) else train
    _check_installed(model, [(test_records if check is test else train_records)[i] for i in check.index[:2]],
                     check.pooled[:2], probe, preprocess, layers)
    return {
        "train_accuracy": probe.score(train.pooled, y_train),
        "test_accuracy": probe.score(test.pooled, y_test) if len(y_test) else None,
        "train_images": len(y_train),
        "test_images": len(y_test),
        "unreadable_images": int(train.n_unreadable + test.n_unreadable),
        "feature_seconds": round(train.seconds + test.seconds, 1),
        "features_computed": int(train.n_computed + test.n_computed),
        "features_cached": int(train.n_cached + test.n_cached),
        "train_seconds": round(train_seconds, 1),
        "training": {"method": "linear probe (frozen backbone, full-batch L-BFGS)", "layer": layers.feature_layer,
                     "head": layers.head, "weight_decay": probe.weight_decay_,
                     "validation_accuracy": {str(k): v for k, v in probe.validation_accuracy_.items()},
                     "config": asdict(probe.config)},
    }


def _features(model: nn.Module, records: Sequence[ImageRecord], preprocess: Preprocess, layers: LayerChoice,
              cache: FeatureCache | None, batch_size: int, progress: bool) -> CachedFeatures:
    if cache is not None:
        return cache.pooled(model, records, preprocess, layers, batch_size=batch_size, progress=progress)
    started = time.perf_counter()
    acts = extract_activations(model, records, preprocess, layers, batch_size=batch_size, progress=progress)
    return CachedFeatures(acts.pooled, acts.index, len(records), len(acts.index), 0,
                          round(time.perf_counter() - started, 2))


def _check_installed(model: nn.Module, records: Sequence[ImageRecord], pooled: np.ndarray, probe: LinearProbe,
                     preprocess: Preprocess, layers: LayerChoice) -> None:
    """The network run end to end must give the probe's logits: catches a wrong head or stale features."""
    if not records:
        return
    acts = extract_activations(model, records, preprocess, layers, batch_size=len(records), progress=False)
    expected = probe.decision_function(pooled[acts.index])
    if not np.allclose(acts.logits, expected, atol=1e-3 * max(1.0, float(np.abs(expected).max()))):
        raise SaywhyError("the network's outputs differ from the fitted head's on the same images (cached features are "
                          "stale or the head is not the last layer): delete the feature cache folder and rerun")
