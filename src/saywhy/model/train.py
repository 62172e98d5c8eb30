"""Train (or fine-tune) a classifier on a dataset's training split, on whatever device it is on.

Used by ``saywhy train`` and by the demo when no cached model exists. Images are decoded
once into a uint8 tensor cache so that epochs cost only the network.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from saywhy.data.images import ImageDataset, Preprocess
from saywhy.data.records import Dataset, ImageRecord
from saywhy.errors import SaywhyError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    augment: bool = True


def load_tensors(records: Sequence[ImageRecord], preprocess: Preprocess, batch_size: int = 128,
                 progress: bool = True, desc: str = "loading images") -> tuple[torch.Tensor, np.ndarray]:
    """Decode images into one tensor; returns it with the indices of readable records."""
    items = ImageDataset(records, preprocess)
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, num_workers=0)
    chunks, kept = [], []
    for images, index, ok in tqdm(loader, desc=desc, disable=not progress, leave=False):
        chunks.append(images[ok])
        kept.append(index[ok].numpy())
    if not chunks:  # no records at all (a split with no test images)
        return torch.zeros((0, 3, preprocess.image_size, preprocess.image_size)), np.zeros(0, dtype=int)
    return torch.cat(chunks), np.concatenate(kept)


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a small random shift: pose changes the demo birds have anyway."""
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    pad = max(1, batch.shape[-1] // 16)
    padded = nn.functional.pad(batch, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[..., dy:dy + batch.shape[-2], dx:dx + batch.shape[-1]]


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    device = next(model.parameters()).device
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(images[start:start + batch_size].to(device))
            correct += (logits.argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    return correct / max(1, len(images))


def train_classifier(model: nn.Module, dataset: Dataset, preprocess: Preprocess, config: TrainConfig = TrainConfig(),
                     progress: bool = True) -> dict:
    """Train ``model`` on the training split and report accuracy on the test split."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = next(model.parameters()).device
    index_of = {cid: i for i, cid in enumerate(dataset.class_ids)}
    train_records, test_records = dataset.split(True), dataset.split(False)
    x_train, kept = load_tensors(train_records, preprocess, progress=progress, desc="loading train images")
    if not len(x_train):
        raise SaywhyError(f"no readable training images among {len(train_records)}: check train_test_split.txt and the images")
    y_train = torch.tensor([index_of[train_records[i].class_id] for i in kept])
    x_test, kept_test = load_tensors(test_records, preprocess, progress=progress, desc="loading test images")
    y_test = torch.tensor([index_of[test_records[i].class_id] for i in kept_test])

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * int(np.ceil(len(x_train) / config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(1, steps))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    started = time.perf_counter()
    bar = tqdm(range(config.epochs), desc="training", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            batch = x_train[idx]
            if config.augment:
                batch = _augment(batch, generator)
            loss = loss_fn(model(batch.to(device)), y_train[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total / len(x_train):.3f}")
    model.eval()
    return {
        "train_accuracy": accuracy(model, x_train, y_train),
        "test_accuracy": accuracy(model, x_test, y_test) if len(x_test) else None,
        "train_images": int(len(x_train)),
        "test_images": int(len(x_test)),
        "unreadable_images": int(len(train_records) + len(test_records) - len(x_train) - len(x_test)),
        "train_seconds": round(time.perf_counter() - started, 1),
        "config": config.__dict__,
    }
