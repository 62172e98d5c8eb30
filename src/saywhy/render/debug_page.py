"""The network-debugging report (Figure 8) as ``debug.json`` and a self-contained ``debug.html``.

One row per failure, as in the paper: the image, canonical images of the true and the
predicted class, the rationale for each class and the attributes that separate them;
above them, the summary over all failures. Images are embedded as small base64 JPEG
thumbnails by default, so the page can be moved or mailed; with ``thumbnails=False``
they are linked by path relative to the page. Plain ``html.escape`` templating keeps the
page free of extra dependencies.
"""
from __future__ import annotations

import base64
import io
import json
import os
from html import escape
from pathlib import Path
from typing import Any

from saywhy.data.images import open_image
from saywhy.errors import SaywhyError

THUMBNAIL = 112

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
td, th { border: 1px solid #ccc; padding: 6px; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
.why { max-width: 18em; }
.contrast { color: #555; font-style: italic; max-width: 22em; }
.small { font-size: 85%; color: #555; }
img { display: block; }
"""


class _Images:
    """Image references for the page: base64 thumbnails (cached per path) or relative links."""

    def __init__(self, page: Path, embed: bool, size: int = THUMBNAIL):
        self.page, self.embed, self.size, self.cache = page, embed, size, {}

    def tag(self, path: str | None, alt: str) -> str:
        if not path:
            return '<span class="small">none</span>'
        if path not in self.cache:
            self.cache[path] = self._source(path)
        if self.cache[path] is None:
            return f'<span class="small">unreadable: {escape(path)}</span>'
        return f'<img src="{escape(self.cache[path], quote=True)}" alt="{escape(alt, quote=True)}" width="{self.size}">'

    def _source(self, path: str) -> str | None:
        if not self.embed:
            return Path(os.path.relpath(Path(path).resolve(), self.page.parent.resolve())).as_posix()
        try:
            image = open_image(path)
        except SaywhyError:
            return None
        image.thumbnail((self.size, self.size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _attributes(pairs: list) -> str:
    return ", ".join(f"{escape(str(t))} ({p:.3f})" for t, p in pairs) or "none"


def render_debug_html(report: dict[str, Any], page: str | Path = "debug.html", thumbnails: bool = True) -> str:
    """The page for a ``DebugReport.to_dict()``; ``page`` is where it will be written (for relative links)."""
    images = _Images(Path(page), thumbnails)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>saywhy: network failures</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>Network failures, explained</h1>", f"<p>{escape(report['summary'])}.</p>"]
    if report["failures"]:
        parts.append("<h2>Most confused class pairs</h2><table><tr><th>true class</th><th>predicted as</th>"
                     "<th>failures</th></tr>")
        parts += [f"<tr><td>{escape(p['true'])}</td><td>{escape(p['predicted'])}</td><td>{p['count']}</td></tr>"
                  for p in report["confused_pairs"][:20]]
        parts.append("</table><h2>Misleading and missed attributes</h2>"
                     '<p class="small">Misleading: favour the wrong class over the true one in a failure\'s '
                     "contrast. Missed: favour the true class. Counts are failures.</p>"
                     "<table><tr><th>misleading</th><th>failures</th><th>missed</th><th>failures</th></tr>")
        misleading, missed = report["misleading_attributes"][:15], report["missed_attributes"][:15]
        for i in range(max(len(misleading), len(missed))):
            a = misleading[i] if i < len(misleading) else ("", "")
            b = missed[i] if i < len(missed) else ("", "")
            parts.append(f"<tr><td>{escape(str(a[0]))}</td><td>{a[1]}</td><td>{escape(str(b[0]))}</td><td>{b[1]}</td></tr>")
        parts.append(f"</table><h2>Failures</h2><p class=\"small\">Canonical image: {escape(report['canonical_rule'])}."
                     "</p><table><tr><th>image</th><th>true class</th><th>predicted class</th>"
                     "<th>rationale for the true class</th><th>rationale for the predicted class</th>"
                     "<th>what separates them</th></tr>")
        for f in report["failures"]:
            parts.append(
                "<tr>"
                f"<td>{images.tag(f['path'], 'query')}<span class=\"small\">{escape(Path(f['path']).name)}</span></td>"
                f"<td>{images.tag(f['canonical_true'], f['true_class'])}{escape(f['true_class'])}"
                f"<br><span class=\"small\">logit {f['logits']['true']:.2f}</span></td>"
                f"<td>{images.tag(f['canonical_predicted'], f['predicted_class'])}{escape(f['predicted_class'])}"
                f"<br><span class=\"small\">logit {f['logits']['predicted']:.2f}</span></td>"
                f"<td class=\"why\">{escape(f['true_rationale']['sentence'])}</td>"
                f"<td class=\"why\">{escape(f['predicted_rationale']['sentence'])}</td>"
                f"<td class=\"contrast\">{escape(f['contrast'])}<br><span class=\"small\">misleading: "
                f"{_attributes(f['misleading'])}<br>missed: {_attributes(f['missed'])}</span></td>"
                "</tr>")
        parts.append("</table>")
    skipped = ", ".join(f"{n} {what}" for what, n in report.get("skipped", {}).items() if n) or "nothing"
    parts.append(f'<p class="small">Skipped: {escape(skipped)}.</p></body></html>')
    return "\n".join(parts) + "\n"


def write_debug_report(report: Any, folder: str | Path, thumbnails: bool = True) -> tuple[Path, Path]:
    """Write ``debug.json`` and ``debug.html`` for a ``DebugReport`` (or its dict) into ``folder``."""
    data = report.to_dict() if hasattr(report, "to_dict") else report
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "debug.json", folder / "debug.html"
    for path, text in ((json_path, json.dumps(data, indent=1) + "\n"),
                       (html_path, render_debug_html(data, html_path, thumbnails))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return json_path, html_path
