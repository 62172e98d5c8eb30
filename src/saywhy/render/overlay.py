"""Heatmaps drawn over their image, one panel per attribute (the paper's Figure 7).

matplotlib is imported inside :func:`overlay_figure`, and through its object API
(``Figure``), not pyplot: no global figure state, no GUI backend, safe in a server.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from saywhy.errors import SaywhyError


def overlay_figure(image: Image.Image, heatmaps: Sequence[np.ndarray], titles: Sequence[str], out: str | Path,
                   peaks: Sequence[tuple[float, float]] | None = None, opacity: float = 0.5,
                   cmap: str = "jet", panel_inches: float = 3.0) -> Path:
    """Write a PNG with one panel per heatmap: the image, the heatmap over it, its peak marked.

    Each heatmap is (H, W) at the image's pixels (see
    :meth:`saywhy.apps.grounding.Grounding.upsampled`), values in [0, 1].

    >>> img = Image.new("RGB", (8, 8))
    >>> overlay_figure(img, [np.eye(8)], ["red crown"], "/tmp/overlay_doc.png").name
    'overlay_doc.png'
    """
    from matplotlib.figure import Figure

    if len(heatmaps) != len(titles) or not heatmaps:
        raise SaywhyError("overlay needs one title per heatmap and at least one heatmap")
    width, height = image.size
    for heatmap in heatmaps:
        if np.shape(heatmap) != (height, width):
            raise SaywhyError(f"heatmap of shape {np.shape(heatmap)} does not match the image ({height}, {width}): upsample it first")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise SaywhyError(f"overlay file {out} must end in .png")
    figure = Figure(figsize=(panel_inches * len(heatmaps), panel_inches * height / width + 0.4))
    axes = figure.subplots(1, len(heatmaps), squeeze=False)[0]
    for i, (ax, heatmap, title) in enumerate(zip(axes, heatmaps, titles)):
        # extent puts pixel (u, v) over [u, u+1) x [v, v+1), saywhy's image coordinates.
        extent = (0, width, height, 0)
        ax.imshow(np.asarray(image.convert("RGB")), extent=extent)
        ax.imshow(heatmap, cmap=cmap, alpha=opacity, vmin=0.0, vmax=1.0, extent=extent)
        if peaks is not None:
            ax.plot(peaks[i][0], peaks[i][1], marker="+", color="white", markersize=14, mew=2)
        ax.set_title(title)
        ax.set_axis_off()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(out, format="png", dpi=100)
    except OSError as error:
        raise SaywhyError(f"cannot write {out} ({error.strerror}): choose another --out path") from None
    return out
