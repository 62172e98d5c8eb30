"""The demo classifier: four conv blocks, global average pooling, one linear layer.

It has exactly the structure the paper assumes (final conv maps -> phi -> W), small
enough to train on two CPU cores in a couple of minutes.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Conv blocks; only the first ``pools`` halve the resolution, so the final maps keep some.

    The demo uses two pools, so a 64 px input gives 16x16 final maps: attribute grounding
    (eq. 9) can only be as sharp as those maps. The default of three keeps checkpoints
    written before ``pools`` existed loading as they were trained.

    >>> import torch
    >>> SmallCNN(n_classes=5)(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 5])
    """

    def __init__(self, n_classes: int, channels: Sequence[int] = (32, 64, 128, 256), dropout: float = 0.2,
                 pools: int = 3):
        super().__init__()
        blocks, c_in = [], 3
        for i, c_out in enumerate(channels):
            blocks.append(_block(c_in, c_out, pool=i < pools))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x):
        return self.fc(self.dropout(self.flatten(self.pool(self.features(x)))))
