"""Visual attribute grounding, eq. 9, and the geometry that puts its heatmaps on the image.

    y = sigma( sum_k alpha_k f_k(x) ),   alpha_k = p(t|f_k)                      (9)

Several attributes of one image share one forward pass: the maps f(x) (filters x h x w)
are flattened once and every attribute's heatmap comes from one (T x F) @ (F x h*w)
product. Heatmaps stay at feature-map resolution; :func:`cells_to_image` and
:func:`upsample_heatmap` place them on the original image, given the box of the image
the network saw (the whole image, or the bounding-box crop).

sigma: the paper names none for eq. 9. The default ``"minmax"`` rescales each heatmap
over its positions to [0, 1] (lowest position 0, peak 1), which is what an overlay
needs; ``"l1"``, ``"softmax"`` and ``"identity"`` are those of
:mod:`saywhy.core.normalization`, applied over positions. Peaks are taken from the raw
sum (:func:`peak_cells` on :func:`attribute_scores`), so where a heatmap peaks never
depends on sigma; for a strictly increasing sigma (minmax, softmax) it is the same place
anyway.

Pure numpy: no I/O, no torch.
"""
from __future__ import annotations

import numpy as np

from saywhy.core.normalization import get_sigma
from saywhy.errors import SaywhyError

HEATMAP_SIGMAS = ("minmax", "l1", "softmax", "identity")
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in original image pixels


def attribute_scores(maps: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The sum inside eq. 9, sum_k alpha_k f_k(x), for T attributes of one image or of N.

    ``maps`` is (F, h, w), or (N, F, h, w) for N images; ``alpha`` (T, F) or (F,); returns
    (T, h, w) (or (h, w)), with the leading N axis for N images: one matrix product for all.
    In float32 when both are float32 (a network's maps are: no float64 copy of them is made),
    else in float64.

    >>> maps = np.zeros((2, 3, 3)); maps[0, 1, 2] = 5.0; maps[1, 0, 0] = 1.0
    >>> float(attribute_scores(maps, np.array([[1.0, 0.0]]))[0, 1, 2])
    5.0
    >>> attribute_scores(np.stack([maps, 2 * maps]), np.array([1.0, 0.0]))[:, 1, 2].tolist()
    [5.0, 10.0]
    """
    dtype = _precision(maps, alpha)
    maps, alpha = np.asarray(maps, dtype=dtype), np.asarray(alpha, dtype=dtype)
    if maps.ndim not in (3, 4):
        raise SaywhyError(f"feature maps must be (filters, height, width), got shape {maps.shape}")
    single = alpha.ndim == 1
    alpha = np.atleast_2d(alpha)
    *lead, n_filters, h, w = maps.shape
    if alpha.shape[1] != n_filters:
        raise SaywhyError(f"p(t|f) has {alpha.shape[1]} filters but the feature maps have {n_filters}")
    scores = (alpha @ maps.reshape(*lead, n_filters, h * w)).reshape(*lead, -1, h, w)  # eq. 9, inside sigma
    return scores[..., 0, :, :] if single else scores


def _precision(*arrays: np.ndarray) -> type:
    """float32 when every array is float32, else float64."""
    return np.float32 if all(np.asarray(a).dtype == np.float32 for a in arrays) else np.float64


def normalize_heatmaps(scores: np.ndarray, sigma: str = "minmax") -> np.ndarray:
    """sigma of eq. 9, over the positions of each (h, w) heatmap; leading axes are kept.

    >>> normalize_heatmaps(np.array([[1.0, 3.0], [2.0, 5.0]])).tolist()
    [[0.0, 0.5], [0.25, 1.0]]
    """
    scores = np.asarray(scores, dtype=np.float64)
    flat = scores.reshape(*scores.shape[:-2], scores.shape[-2] * scores.shape[-1])  # -1 fails with no heatmaps
    if flat.size == 0 and sigma in HEATMAP_SIGMAS:
        return flat.reshape(scores.shape)
    if sigma == "minmax":
        low, high = flat.min(axis=-1, keepdims=True), flat.max(axis=-1, keepdims=True)
        span = high - low
        out = np.divide(flat - low, span, out=np.zeros_like(flat), where=span > 0)
    elif sigma in HEATMAP_SIGMAS:
        out = get_sigma(sigma)(flat, axis=-1)
    else:
        raise SaywhyError(f"unknown heatmap sigma {sigma!r}: choose one of {', '.join(HEATMAP_SIGMAS)}")
    return out.reshape(scores.shape)


def constant_alpha(n_filters: int) -> np.ndarray:
    """The constant-p.d.f. baseline: alpha_k = 1/F for every filter, i.e. the mean map."""
    return np.full((1, n_filters), 1.0 / n_filters)


def peak_cells(heatmaps: np.ndarray) -> np.ndarray:
    """(row, col) of each heatmap's maximum, (..., 2); ties go to the first in row-major order.

    >>> peak_cells(np.array([[[0.0, 1.0], [3.0, 2.0]]])).tolist()
    [[1, 0]]
    """
    heatmaps = np.asarray(heatmaps)
    h, w = heatmaps.shape[-2:]
    flat = heatmaps.reshape(*heatmaps.shape[:-2], h * w).argmax(axis=-1)
    return np.stack(np.divmod(flat, w), axis=-1)


def cells_to_image(cells: np.ndarray, map_shape: tuple[int, int], box: Box) -> np.ndarray:
    """Feature-map (row, col) positions as image (x, y) pixels.

    Cell (i, j) of an h x w map covers the network input's [j, j+1) x [i, i+1) in cell
    units (the half-pixel convention of resizing with align_corners=False), and the input
    is the ``box`` (x0, y0, x1, y1) of the original image stretched to a square, so cell
    centres land at x0 + (j + 0.5) * (x1 - x0) / w, and likewise for y. Pixel coordinates
    are continuous: pixel (u, v) covers [u, u+1) x [v, v+1), its centre is (u+.5, v+.5).

    >>> cells_to_image(np.array([[0, 0], [7, 7]]), (8, 8), (0, 0, 128, 128)).tolist()
    [[8.0, 8.0], [120.0, 120.0]]
    """
    cells = np.asarray(cells, dtype=np.float64)
    h, w = map_shape
    x0, y0, x1, y1 = box
    x = x0 + (cells[..., 1] + 0.5) * (x1 - x0) / w
    y = y0 + (cells[..., 0] + 0.5) * (y1 - y0) / h
    return np.stack([x, y], axis=-1)


def upsample_heatmap(heatmap: np.ndarray, box: Box, image_size: tuple[int, int], outside: float = 0.0) -> np.ndarray:
    """A (h, w) heatmap as an (H, W) image-sized map, bilinear between cell centres.

    ``image_size`` is (W, H) as PIL gives it. Pixels outside ``box`` (outside the crop the
    network saw) get ``outside``; within it, values beyond the outermost cell centres are
    held constant. A pixel whose centre is a cell centre gets exactly that cell's value,
    the same geometry as :func:`cells_to_image`.

    >>> hm = np.arange(4.0).reshape(2, 2)
    >>> upsample_heatmap(hm, (0, 0, 4, 4), (4, 4))[[0, 3], [0, 3]].tolist()
    [0.0, 3.0]
    """
    heatmap = np.asarray(heatmap, dtype=np.float64)
    h, w = heatmap.shape
    width, height = image_size
    x0, y0, x1, y1 = box
    # Fractional cell coordinates of every pixel centre: the inverse of cells_to_image.
    cols = (np.arange(width) + 0.5 - x0) * w / (x1 - x0) - 0.5
    rows = (np.arange(height) + 0.5 - y0) * h / (y1 - y0) - 0.5
    c = np.clip(cols, 0, w - 1)
    r = np.clip(rows, 0, h - 1)
    c0, r0 = np.floor(c).astype(int), np.floor(r).astype(int)
    c1, r1 = np.minimum(c0 + 1, w - 1), np.minimum(r0 + 1, h - 1)
    fc, fr = (c - c0)[None, :], (r - r0)[:, None]
    top = heatmap[r0][:, c0] * (1 - fc) + heatmap[r0][:, c1] * fc
    bottom = heatmap[r1][:, c0] * (1 - fc) + heatmap[r1][:, c1] * fc
    out = top * (1 - fr) + bottom * fr
    inside_x = (np.arange(width) + 0.5 >= x0) & (np.arange(width) + 0.5 < x1)
    inside_y = (np.arange(height) + 0.5 >= y0) & (np.arange(height) + 0.5 < y1)
    out[~(inside_y[:, None] & inside_x[None, :])] = outside
    return out
