"""Fine-tune the last stages of a pretrained network on birds, from cached lower stages.

The paper fine-tunes its whole network on CUB, which is what ties the final layer's
filters to bird parts. Here the last ``stages`` stages of an EfficientNet (timm's
``blocks[-stages:]``), its ``conv_head`` + ``bn2`` and the classifier are trained; every
layer below stays exactly as pretrained. Because nothing below changes, its output is
computed once per training image and once for the image's horizontal flip (the only
augmentation), kept in the content-keyed feature cache (:mod:`saywhy.model.feature_cache`),
and every epoch runs only the trained stages: on a CPU an epoch costs seconds, not the
minutes a full forward pass over the images would.

- The classifier starts from the linear probe of the frozen path (:class:`LinearProbe` on
  the pooled features of the fit part), so epoch 0 *is* the frozen-head model, and early
  stopping can only keep a fine-tuned epoch if it beats it on held-out images.
- A seeded, per-class part of the *training* images (``validation_fraction``) is held out:
  the epoch with the best held-out accuracy (ties: lower held-out loss) is kept, and training
  stops after ``patience`` epochs without improvement. The test split is only scored.
- BatchNorm stays in eval mode everywhere, also in the trained stages (their affine weights
  train, their running statistics stay ImageNet's): the cached inputs were computed in eval
  mode, batches of 32 bird crops give noisy statistics, and eval-mode BN makes the network
  trained exactly the network saved and explained (no train/eval mismatch to re-estimate).
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from saywhy.data.images import ImageDataset, Preprocess
from saywhy.data.records import Dataset, ImageRecord
from saywhy.errors import SaywhyError
from saywhy.model.feature_cache import KEY_BYTES, FeatureCache, _backbone_digest, _read_shards, _write_shard, image_key


@dataclass(frozen=True)
class FinetuneConfig:
    """How the top stages are trained; stored in the checkpoint's metadata."""

    stages: int = 1  # trained stages of blocks, counted from the top (conv_head, bn2 and classifier always)
    max_epochs: int = 30
    patience: int = 6  # epochs without a better held-out accuracy before stopping
    lr: float = 3e-4  # AdamW, cosine decay to 0 over max_epochs
    warmup_epochs: int = 1  # linear warm-up of the learning rate
    weight_decay: float = 0.01
    batch_size: int = 32
    dropout: float = 0.2  # on the pooled features, as timm's EfficientNet-Lite0 trains its head
    label_smoothing: float = 0.1
    validation_fraction: float = 0.15
    seed: int = 0


class _Top(nn.Module):
    """The trained part, cached lower-stage maps in, pooled features out (the classifier apart)."""

    def __init__(self, model: nn.Module, first: int):
        super().__init__()
        self.model, self.first = model, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        for stage in m.blocks[self.first:]:
            x = stage(x)
        return m.global_pool(m.bn2(m.conv_head(x))).flatten(1)


@dataclass
class SplitNetwork:
    """A network cut in two: ``bottom`` (frozen, cached) and ``top`` + ``classifier`` (trained)."""

    model: nn.Module
    bottom: nn.Sequential
    top: _Top
    classifier: nn.Linear
    first_trained: str  # the name of the lowest trained module, e.g. "blocks.6"

    def trained_modules(self) -> list[str]:
        n = len(self.model.blocks)
        return [f"blocks.{i}" for i in range(self.top.first, n)] + ["conv_head", "bn2", "classifier"]

    def logits(self, cached: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.top(cached))


def split_network(model: nn.Module, stages: int) -> SplitNetwork:
    """Cut a timm EfficientNet-style network (``conv_stem, bn1, blocks, conv_head, bn2, classifier``) below its last ``stages`` stages.

    >>> import timm
    >>> split = split_network(timm.create_model("test_efficientnet", num_classes=3), 1)
    >>> split.first_trained, split.trained_modules()[-1]
    ('blocks.4', 'classifier')
    """
    needed = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool", "classifier")
    if not all(hasattr(model, name) for name in needed) or not isinstance(model.blocks, nn.Sequential):
        raise SaywhyError(f"--finetune needs a timm EfficientNet-style network (conv_stem, blocks, conv_head); "
                          f"{type(model).__name__} is not one: use --arch efficientnet_lite0 or timm:efficientnet_*")
    n = len(model.blocks)
    if not 1 <= stages <= n - 1:
        raise SaywhyError(f"--finetune-stages must be between 1 and {n - 1} for {type(model).__name__} ({n} stages)")
    if not isinstance(model.classifier, nn.Linear):
        raise SaywhyError(f"the network's classifier is {type(model.classifier).__name__}, not a linear layer")
    first = n - stages
    bottom = nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:first])
    return SplitNetwork(model, bottom, _Top(model, first), model.classifier, f"blocks.{first}")


# ----- the frozen part's output, computed once --------------------------------------------------
CHUNK = 512  # images per cache shard written while the frozen layers run
@dataclass
class FrozenOutputs:
    """The bottom's output for the readable items (row i is ``items[index[i]]``), and for their flips."""

    maps: torch.Tensor  # (N, C, h, w) float32
    flipped: torch.Tensor | None  # (N, C, h, w) for the horizontally flipped inputs, when asked
    index: np.ndarray
    n_computed: int  # images this call ran the frozen layers for
    n_cached: int
    seconds: float


def frozen_outputs(split: SplitNetwork, items: Sequence[ImageRecord], preprocess: Preprocess,
                   cache: FeatureCache | None, flips: bool, batch_size: int = 32, progress: bool = True) -> FrozenOutputs:
    """The frozen layers' output of ``items`` (and of their horizontal flips): read where cached, else computed once.

    Rows live under ``CACHE/frozen/<key>/`` with the feature cache's shards: the key is a
    digest of the frozen layers (structure and tensors), the preprocessing and the output
    shape; a row's key is the image's content key plus whether it is flipped.
    """
    started = time.perf_counter()
    split.model.eval()
    device = next(split.model.parameters()).device
    shape = _output_shape(split, preprocess, device)
    size = int(np.prod(shape))
    base = [image_key(item, preprocess) for item in items]
    variants = [False, True] if flips else [False]
    keys = {flip: [_flip_key(k, flip) for k in base] for flip in variants}
    folder = None
    known: dict[bytes, np.ndarray] = {}
    if cache is not None:
        parts = [_backbone_digest(split.bottom, "\0"), list(shape), preprocess.image_size, list(preprocess.mean),
                 list(preprocess.std), preprocess.crop]
        folder = cache.folder / "frozen" / hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
        known = _read_shards(folder, size)
        known = {k: v for k, v in known.items() if np.isfinite(v).all()}  # a damaged row is computed again
    missing = [i for i in range(len(items)) if any(keys[f][i] is None or keys[f][i] not in known for f in variants)]
    computed: dict[tuple[int, bool], np.ndarray] = {}
    for start in range(0, len(missing), CHUNK):  # a shard per chunk: an interrupted run keeps what it computed
        chunk = missing[start:start + CHUNK]
        rows = _run_bottom(split, [items[i] for i in chunk], preprocess, variants, batch_size, progress, device)
        rows = {(chunk[j], flip): row for (j, flip), row in rows.items()}
        computed.update(rows)
        new = [(keys[flip][i], row) for (i, flip), row in rows.items() if keys[flip][i] is not None]
        if folder is not None and new:
            _write_shard(folder, np.stack([np.frombuffer(k, np.uint8) for k, _ in new]),
                         np.stack([r.reshape(-1) for _, r in new]).astype(np.float32))
    index, rows = [], {flip: [] for flip in variants}
    for i in range(len(items)):
        got = {}
        for flip in variants:
            row = computed.get((i, flip))
            if row is None and keys[flip][i] is not None:
                row = known.get(keys[flip][i])
            got[flip] = row
        if all(r is not None for r in got.values()):
            index.append(i)
            for flip in variants:
                rows[flip].append(np.asarray(got[flip], np.float32).reshape(shape))

    def stacked(flip: bool) -> torch.Tensor:
        return torch.from_numpy(np.stack(rows[flip])) if rows[flip] else torch.zeros((0, *shape))

    n_computed = len({i for i, _ in computed})
    return FrozenOutputs(stacked(False), stacked(True) if flips else None, np.asarray(index, int), n_computed,
                         len(index) - len([i for i in index if (i, False) in computed]),
                         round(time.perf_counter() - started, 1))


def _flip_key(key: bytes | None, flip: bool) -> bytes | None:
    if key is None:
        return None
    return hashlib.sha256(key + (b"\0flip" if flip else b"\0upright")).digest()[:KEY_BYTES]


def _output_shape(split: SplitNetwork, preprocess: Preprocess, device: torch.device) -> tuple[int, ...]:
    with torch.inference_mode():
        out = split.bottom(torch.zeros(1, 3, preprocess.image_size, preprocess.image_size, device=device))
    return tuple(out.shape[1:])


def _run_bottom(split: SplitNetwork, items: Sequence[ImageRecord], preprocess: Preprocess, variants: list[bool],
                batch_size: int, progress: bool, device: torch.device) -> dict[tuple[int, bool], np.ndarray]:
    from saywhy.model.activations import prefetched

    loader = torch.utils.data.DataLoader(ImageDataset(items, preprocess), batch_size=batch_size)
    batches = prefetched(loader) if len(items) > batch_size else loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=len(loader), desc="frozen layers", leave=False)
    out: dict[tuple[int, bool], np.ndarray] = {}
    with torch.inference_mode():
        for images, index, ok in batches:
            if not ok.any():
                continue
            images, index = images[ok].to(device), np.asarray(index)[np.asarray(ok)]
            for flip in variants:
                maps = split.bottom(torch.flip(images, dims=[3]) if flip else images).float().cpu().numpy()
                out.update({(int(i), flip): m for i, m in zip(index, maps)})
    return out


# ----- training ---------------------------------------------------------------------------------
def _evaluate(split: SplitNetwork, maps: torch.Tensor, labels: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the network on cached maps."""
    if not len(labels):
        return float("nan"), float("nan")
    correct, loss = 0, 0.0
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size * 4):
            logits = split.logits(maps[start:start + batch_size * 4])
            y = labels[start:start + batch_size * 4]
            correct += int((logits.argmax(1) == y).sum())
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
    return correct / len(labels), loss / len(labels)


def _pooled(split: SplitNetwork, maps: torch.Tensor, batch_size: int) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([split.top(maps[s:s + batch_size * 4]) for s in range(0, len(maps), batch_size * 4)]).numpy()


def finetune_top(split: SplitNetwork, train: FrozenOutputs, labels: np.ndarray, n_classes: int,
                 config: FinetuneConfig = FinetuneConfig(), progress: bool = True) -> dict:
    """Train ``split``'s top stages and classifier on cached maps (and their flips); keep the best held-out epoch.

    ``labels[i]`` is the class of ``train.maps[i]``. Frozen layers get no gradient and keep
    every bit; BatchNorm stays in eval mode. Returns the training report (history per epoch).
    """
    if train.flipped is None:
        raise SaywhyError("fine-tuning needs the flipped inputs' maps too (frozen_outputs(..., flips=True))")
    with torch.random.fork_rng(devices=[]):  # dropout draws from torch's global generator: seeded, and left as it was
        torch.manual_seed(config.seed)
        return _finetune_top(split, train, labels, n_classes, config, progress)


def _finetune_top(split: SplitNetwork, train: FrozenOutputs, labels: np.ndarray, n_classes: int,
                  config: FinetuneConfig, progress: bool) -> dict:
    from saywhy.model.linear_probe import LinearProbe, ProbeConfig, stratified_split

    model = split.model
    model.eval()
    trained = [model.get_submodule(name) for name in split.trained_modules()]
    trained_ids = {id(p) for m in trained for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained_ids)
    params = [p for p in model.parameters() if id(p) in trained_ids]

    y = torch.from_numpy(np.asarray(labels, np.int64))
    fit_idx, held_idx = stratified_split(np.asarray(labels), config.validation_fraction, config.seed)
    if not len(held_idx):
        raise SaywhyError("fine-tuning needs at least two training images of some class to hold one out for early stopping")
    fit_t, held_t = torch.from_numpy(fit_idx), torch.from_numpy(held_idx)
    held_maps, held_y = train.maps[held_t], y[held_t]

    # Epoch 0 is the frozen path: the linear probe on the fit part's pooled features.
    probe = LinearProbe(config=ProbeConfig(seed=config.seed)).fit(
        _pooled(split, train.maps[fit_t], config.batch_size), labels[fit_idx], n_classes=n_classes)
    probe.install(model, "classifier")

    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(fit_idx) / config.batch_size)
    total_steps, warmup = config.max_epochs * steps_per_epoch, steps_per_epoch * config.warmup_epochs
    # linear warm-up (full-size steps on a pretrained stage at once knock it off its minimum), then cosine to 0
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup))
                                                 * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    acc, loss = _evaluate(split, held_maps, held_y, config.batch_size)
    history = [{"epoch": 0, "train_loss": None, "held_out_accuracy": acc, "held_out_loss": loss}]
    best = (acc, -loss, 0)
    best_state = copy.deepcopy({k: v for k, v in model.state_dict().items()})
    started, since_best = time.perf_counter(), 0
    for epoch in range(1, config.max_epochs + 1):
        order = fit_t[torch.randperm(len(fit_t), generator=generator)]
        flip = torch.rand(len(order), generator=generator) < 0.5
        total, seen = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            rows, flips = order[start:start + config.batch_size], flip[start:start + config.batch_size]
            x = torch.where(flips[:, None, None, None], train.flipped[rows], train.maps[rows])
            pooled = nn.functional.dropout(split.top(x), config.dropout, training=True)
            batch_loss = nn.functional.cross_entropy(split.classifier(pooled), y[rows],
                                                     label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            schedule.step()
            total, seen = total + batch_loss.item() * len(rows), seen + len(rows)
        acc, loss = _evaluate(split, held_maps, held_y, config.batch_size)
        history.append({"epoch": epoch, "train_loss": total / seen, "held_out_accuracy": acc, "held_out_loss": loss})
        if not (math.isfinite(loss) and math.isfinite(total)):
            break  # diverged: the best finite epoch is restored below
        if progress:
            print(f"  epoch {epoch}: train loss {total / seen:.3f}, held-out accuracy {acc:.1%}, loss {loss:.3f}",
                  flush=True)
        if (acc, -loss) > best[:2]:
            best, since_best = (acc, -loss, epoch), 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            if since_best >= config.patience:
                break
    model.load_state_dict(best_state)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return {
        "best_epoch": best[2], "epochs_run": len(history) - 1, "held_out_accuracy": best[0], "held_out_loss": -best[1],
        "fit_images": len(fit_idx), "held_out_images": len(held_idx), "history": history,
        "epoch_seconds": round((time.perf_counter() - started) / max(1, len(history) - 1), 1),
        "head_init": {"method": "linear probe on the fit part's frozen pooled features", "weight_decay": probe.weight_decay_},
    }


def finetune(model: nn.Module, dataset: Dataset, preprocess: Preprocess, cache: FeatureCache | None = None,
             config: FinetuneConfig = FinetuneConfig(), progress: bool = True) -> dict:
    """Fine-tune ``model``'s last ``config.stages`` stages on ``dataset``'s training split; score the test split.

    The model must already have one output per class (``build_pretrained(name, n_classes)``).
    Returns the report that goes into the checkpoint's metadata.
    """
    from saywhy.model.linear_probe import head_training_split

    split = split_network(model, config.stages)
    index_of, train_records, test_records = head_training_split(dataset, split.classifier.out_features)
    train = frozen_outputs(split, train_records, preprocess, cache, flips=True, batch_size=config.batch_size,
                           progress=progress)
    test = frozen_outputs(split, test_records, preprocess, cache, flips=False, batch_size=config.batch_size,
                          progress=progress)
    y_train = np.array([index_of[train_records[i].class_id] for i in train.index], int)
    y_test = torch.tensor([index_of[test_records[i].class_id] for i in test.index], dtype=torch.int64)
    if not len(y_train):
        raise SaywhyError(f"none of the {len(train_records)} training images could be read: check {dataset.root}/images")
    started = time.perf_counter()
    report = finetune_top(split, train, y_train, len(dataset.class_ids), config, progress)
    train_seconds = time.perf_counter() - started
    _check_end_to_end(split, test_records if len(test.index) else train_records, test if len(test.index) else train,
                      preprocess)
    train_acc, _ = _evaluate(split, train.maps, torch.from_numpy(y_train), config.batch_size)
    test_acc, _ = _evaluate(split, test.maps, y_test, config.batch_size) if len(y_test) else (None, None)
    return {
        "train_accuracy": train_acc, "test_accuracy": test_acc,
        "train_images": len(y_train), "test_images": len(y_test),
        "unreadable_images": int(len(train_records) - len(train.index) + len(test_records) - len(test.index)),
        "feature_seconds": round(train.seconds + test.seconds, 1),
        "features_computed": int(train.n_computed + test.n_computed),
        "features_cached": int(train.n_cached + test.n_cached),
        "train_seconds": round(train_seconds, 1),
        "finetuned": True,
        "training": {"method": f"fine-tuned: {', '.join(split.trained_modules())} trained on cached outputs of the "
                               f"frozen layers below {split.first_trained} (AdamW, warm-up and cosine LR, flip augmentation, "
                               "early stopping on held-out training images)",
                     "head": "classifier", "layer": "bn2", "stages": config.stages,
                     "trained_modules": split.trained_modules(), "frozen_below": split.first_trained,
                     "batchnorm": "eval mode in every layer (running statistics kept; trained stages' affine weights trained)",
                     "config": asdict(config), **report},
    }


def _check_end_to_end(split: SplitNetwork, records: Sequence[ImageRecord], cached: FrozenOutputs,
                      preprocess: Preprocess) -> None:
    """The whole network run on images must give what training computed from the cache: catches a stale cache."""
    chosen = [records[i] for i in cached.index[:2]]
    if not chosen:
        return
    x = torch.stack([ImageDataset(chosen, preprocess)[j][0] for j in range(len(chosen))])
    with torch.inference_mode():
        direct = split.model(x.to(next(split.model.parameters()).device)).float().cpu()
        via_cache = split.logits(cached.maps[:len(chosen)]).float().cpu()
    if not torch.allclose(direct, via_cache, atol=1e-3 * max(1.0, float(via_cache.abs().max()))):
        raise SaywhyError("the fine-tuned network's outputs differ from those computed from cached frozen layers "
                          "(the feature cache is stale): delete its 'frozen' folder and rerun")


def train_finetuned(
    name: str,
    root: str | Path,
    out: str | Path,
    *,
    captions: str | Path | None = None,
    crop: str = "none",
    image_size: int | None = None,
    weights: str | Path | None = None,
    config: FinetuneConfig = FinetuneConfig(),
    feature_cache: FeatureCache | str | Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """``saywhy train --arch NAME --finetune`` as a library call: fine-tune, score, write the checkpoint.

    The checkpoint has the format of :func:`saywhy.model.pretrained.train_pretrained_head`'s
    (``saywhy fit --model`` reads either), plus ``finetuned: true`` and how in ``training``.

    >>> model, meta = train_finetuned("efficientnet_lite0", "data/cub", "models/lite0-ft", crop="bbox")  # doctest: +SKIP
    >>> meta["training"]["best_epoch"], meta["test_accuracy"]                                        # doctest: +SKIP
    (9, 0.87)
    """
    from saywhy.model.pretrained import train_pretrained

    def fit(model, dataset, preprocess, cache):
        return finetune(model, dataset, preprocess, cache=cache, config=config, progress=progress)

    return train_pretrained(name, root, out, fit, captions=captions, crop=crop, image_size=image_size,
                            weights=weights, feature_cache=feature_cache)
