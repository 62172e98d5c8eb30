"""Part-pooled features: the final maps averaged under a part's location map instead of uniformly.

The evidence model reads each attribute from phi(x), the spatial mean of the final maps
f(x), so "red crown" and "red breast" see the same pixels and greying out the crown moves
"red crown" no more than greying out the wing. With part maps learned from training
keypoints (:mod:`saywhy.core.part_maps`: per part p a log-odds map s_p(x, cell)), a part
group g (the parts one noun names: "wing" is the left and the right wing) pools the maps
under a softmax over cells of its log-odds,

    w_g(x, cell) = softmax_cells( max_{p in g} s_p(x, cell) / temperature )
    psi_g,k(x)   = sum_cells w_g(x, cell) f_k(x, cell)

so psi_g(x) is what the filters show where the part is. An attribute naming a part of
group g then gets its logistic evidence from psi_g(x) instead of phi(x) ("part"), or from
both side by side ("both"); the others keep phi(x). Explaining stays one forward pass plus (G x h w) x F products per image.

Pure numpy: arrays in, arrays out.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from saywhy.errors import SaywhyError

POOLINGS = ("global", "part", "both")  # ExplainerConfig.evidence_pooling
TEMPERATURE = 1.0  # the softmax's temperature over cells, in the part maps' log-odds units


def part_pooling_weights(part_scores: np.ndarray, groups: Sequence[Sequence[int]],
                         temperature: float = TEMPERATURE) -> np.ndarray:
    """(N, G, h*w) softmax over cells of each group's part log-odds (the largest over its parts),
    from (N, P, h, w) ``part_scores``; ``groups[g]`` lists part indices.

    >>> s = np.log(np.array([[[[1.0, 3.0]], [[1.0, 1.0]]]]))  # part 0 three times likelier at cell 1
    >>> part_pooling_weights(s, [[0], [1]]).round(2).tolist()
    [[[0.25, 0.75], [0.5, 0.5]]]
    """
    scores = np.asarray(part_scores)
    scores = scores if scores.dtype == np.float32 else np.asarray(scores, np.float64)  # float32 stays float32
    if scores.ndim != 4:
        raise SaywhyError(f"part pooling needs (images, parts, h, w) part scores, got shape {scores.shape}")
    if not temperature > 0:
        raise SaywhyError(f"part pooling's temperature must be above 0, got {temperature!r}")
    n, _, h, w = scores.shape
    out = np.empty((n, len(groups), h * w), scores.dtype)
    for g, parts in enumerate(groups):
        z = scores[:, list(parts)].max(axis=1).reshape(n, h * w) / temperature
        z = np.exp(z - z.max(axis=1, keepdims=True))
        out[:, g] = z / z.sum(axis=1, keepdims=True)
    return out


def part_pooled(maps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, G, F): the (N, F, h, w) ``maps`` averaged over cells with (N, G, h*w) ``weights``.

    >>> maps = np.arange(8.0).reshape(1, 2, 2, 2)             # filter 0: 0..3, filter 1: 4..7
    >>> part_pooled(maps, np.array([[[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]]])).tolist()
    [[[0.0, 4.0], [1.5, 5.5]]]
    """
    maps = np.asarray(maps)
    maps = maps if maps.dtype == np.float32 else np.asarray(maps, np.float64)  # float32 maps: float32 products
    n, f = maps.shape[:2]
    return np.matmul(np.asarray(weights, maps.dtype), maps.reshape(n, f, -1).transpose(0, 2, 1))
