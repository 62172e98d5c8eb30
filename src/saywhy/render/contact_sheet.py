"""A contact sheet: a grid of thumbnails, each with a short label (Figure 6 as one image)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from saywhy.data.images import open_image
from saywhy.errors import SaywhyError

LABEL_LINES = 2


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def _thumbnail(path: str | Path, size: int) -> Image.Image:
    """The image fitted into a size x size square on white; a grey tile if it cannot be read."""
    tile = Image.new("RGB", (size, size), "white")
    try:
        image = open_image(path)
    except SaywhyError:
        return Image.new("RGB", (size, size), (200, 200, 200))
    image.thumbnail((size, size))
    tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return tile


def contact_sheet(items: Sequence[tuple[str | Path, str]], out: str | Path, columns: int = 5, thumb: int = 128,
                  title: str | None = None) -> Path:
    """Write a grid of ``(image path, label)`` items, row by row, to ``out`` (PNG or JPEG by suffix).

    Labels may hold a line break; each tile has room for two lines. Unreadable images
    appear as grey tiles, so the grid keeps its order.
    """
    if not items:
        raise SaywhyError("nothing to draw on the contact sheet: the ranking is empty")
    if columns < 1 or thumb < 16:
        raise SaywhyError(f"columns must be at least 1 and thumbnails at least 16 px, got {columns} and {thumb}")
    out = Path(out)
    font_size = max(10, thumb // 11)
    font = _font(font_size)
    line = font_size + 3
    pad, title_h = 6, (line + 2 * 6 if title else 0)
    columns = min(columns, len(items))
    rows = -(-len(items) // columns)
    cell_w, cell_h = thumb + pad, thumb + LABEL_LINES * line + pad
    sheet = Image.new("RGB", (columns * cell_w + pad, rows * cell_h + pad + title_h), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    for i, (path, label) in enumerate(items):
        x, y = pad + (i % columns) * cell_w, title_h + pad + (i // columns) * cell_h
        sheet.paste(_thumbnail(path, thumb), (x, y))
        for j, text in enumerate(str(label).splitlines()[:LABEL_LINES]):
            draw.text((x, y + thumb + 2 + j * line), _fit(draw, text, font, thumb), fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    sheet.save(tmp, format="JPEG" if out.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    os.replace(tmp, out)
    return out


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """Cut a label with an ellipsis so that it fits under its tile."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
