"""Draw the gallery of :mod:`saywhy.apps.gallery` as ``index.html`` and ``gallery.json``.

The page is self-contained: thumbnails are base64 JPEGs, the Figure 1 CAM figure a base64
PNG (also written beside the page). matplotlib is only imported to draw the CAM.
"""
from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from saywhy.apps.gallery import CAM_FILE, THUMBNAIL, Gallery, Misclassified
from saywhy.data.images import open_image
from saywhy.errors import SaywhyError

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 70em; }
section { margin-bottom: 2.5em; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.card { width: 14em; border: 1px solid #ccc; padding: 0.5em; }
.right { color: #1a7f37; font-weight: bold; }
.wrong { color: #c62828; font-weight: bold; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 6px; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
.why { max-width: 18em; }
.contrast { color: #555; font-style: italic; }
.small { font-size: 85%; color: #555; }
img { display: block; }
"""


def _data_uri(data: bytes, kind: str) -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


class _Thumbnails:
    """Base64 JPEG thumbnails, one per path (cached); unreadable images say so."""

    def __init__(self, size: int = THUMBNAIL):
        self.size, self.cache = size, {}

    def tag(self, path: str | None, alt: str) -> str:
        if not path:
            return '<span class="small">none</span>'
        if path not in self.cache:
            try:
                image = open_image(path)
                image.thumbnail((self.size, self.size))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=85)
                self.cache[path] = _data_uri(buffer.getvalue(), "jpeg")
            except SaywhyError:
                self.cache[path] = None
        if self.cache[path] is None:
            return f'<span class="small">unreadable: {escape(path)}</span>'
        return f'<img src="{self.cache[path]}" alt="{escape(alt, quote=True)}" width="{self.size}">'


def _attributes(pairs: Sequence) -> str:
    return ", ".join(f"{escape(str(t))} ({p:.3f})" for t, p in pairs) or "none"


def render_gallery_html(data: dict[str, Any], cam_png: bytes | None) -> str:
    """The page for a ``Gallery.to_dict()``; ``cam_png`` is the Figure 1 overlay (PNG bytes)."""
    thumbs = _Thumbnails()
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>saywhy: explanation gallery</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>Why the network decided: a gallery</h1>",
             f'<p class="small">{data["n_test"]} test images, seed {data["seed"]}.</p>']

    parts.append('<section id="figure3"><h2>Figure 3: test images and their explanations</h2>'
                 '<p class="small">The explanation of the predicted class; right or wrong against the label.</p>'
                 '<div class="grid">')
    for s in data["figure3"]:
        mark = ('<span class="right">right</span>' if s["correct"]
                else f'<span class="wrong">wrong</span>, labelled {escape(s["true_class"])}')
        parts.append(f'<div class="card">{thumbs.tag(s["path"], s["predicted_class"])}'
                     f'<p class="sentence">{escape(s["sentence"])}</p><p class="small">{mark}<br>'
                     f'{escape(Path(s["path"]).name)}</p></div>')
    parts.append("</div></section>")

    f1 = data["figure1"]
    cam = (f'<img src="{_data_uri(cam_png, "png")}" alt="CAM of {escape(f1["predicted_class"], quote=True)}">'
           if cam_png else '<span class="small">no CAM drawn</span>')
    title = "a misclassified image" if f1["misclassified"] else "the closest call (nothing is misclassified)"
    parts.append(f'<section id="figure1"><h2>Figure 1: {title}</h2><p class="note">{escape(f1["note"])}</p>'
                 f'<table><tr><td>{cam}<span class="small">{escape(Path(f1["path"]).name)}; CAM of each class, '
                 f'scaled to [0, 1]</span></td><td class="why">'
                 f'<p class="sentence">{escape(f1["predicted_sentence"])}</p>'
                 f'<p class="sentence">{escape(f1["other_sentence"])}</p>'
                 f'<p class="contrast">{escape(f1["contrast"])}</p>'
                 f'<p class="small">logit margin {f1["margin"]:.2f}</p></td></tr></table></section>')

    f8 = data["figure8"]
    parts.append(f'<section id="figure8"><h2>Figure 8: network failures</h2><p>{escape(f8["summary"])}.</p>')
    if f8["failures"]:
        parts.append(f'<p class="small">Canonical image: {escape(f8["canonical_rule"])}. Showing '
                     f'{len(f8["failures"])} of {f8["n_failures"]}.</p><table><tr><th>query image</th>'
                     "<th>true class</th><th>predicted class</th><th>rationale for the true class</th>"
                     "<th>rationale for the predicted class</th><th>what separates them</th></tr>")
        for f in f8["failures"]:
            parts.append(
                f"<tr><td>{thumbs.tag(f['path'], 'query')}<span class=\"small\">{escape(Path(f['path']).name)}</span></td>"
                f"<td>{thumbs.tag(f['canonical_true'], f['true_class'])}{escape(f['true_class'])}</td>"
                f"<td>{thumbs.tag(f['canonical_predicted'], f['predicted_class'])}{escape(f['predicted_class'])}</td>"
                f"<td class=\"why\">{escape(f['true_rationale']['sentence'])}</td>"
                f"<td class=\"why\">{escape(f['predicted_rationale']['sentence'])}</td>"
                f"<td class=\"contrast\">{escape(f['contrast'])}<br><span class=\"small\">misleading: "
                f"{_attributes(f['misleading'])}<br>missed: {_attributes(f['missed'])}</span></td></tr>")
        parts.append("</table>")
    parts.append("</section>")
    skipped = ", ".join(f"{n} {what}" for what, n in data.get("skipped", {}).items() if n) or "nothing"
    parts.append(f'<p class="small">Skipped: {escape(skipped)}.</p></body></html>')
    return "\n".join(parts) + "\n"


def draw_figure1(figure1: Misclassified, out: str | Path) -> Path:
    """The Figure 1 overlay PNG: the CAM of the predicted and of the other class over the image."""
    from saywhy.render.overlay import overlay_figure

    other = "true" if figure1.misclassified else "runner-up"
    return overlay_figure(open_image(figure1.path), [figure1.cam_predicted, figure1.cam_other],
                          [f"predicted: {figure1.predicted_class}", f"{other}: {figure1.other_class}"], out)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_gallery(gallery: Gallery, folder: str | Path) -> tuple[Path, Path]:
    """Write ``gallery.json``, ``index.html`` and ``figure1_cam.png`` into ``folder``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SaywhyError(f"{folder} is a file: --out must be a folder")
    folder.mkdir(parents=True, exist_ok=True)
    cam = draw_figure1(gallery.figure1, folder / CAM_FILE)
    data = gallery.to_dict()
    json_path, html_path = folder / "gallery.json", folder / "index.html"
    _write_atomic(json_path, json.dumps(data, indent=1) + "\n")
    _write_atomic(html_path, render_gallery_html(data, cam.read_bytes()))
    return json_path, html_path
