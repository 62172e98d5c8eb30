"""``saywhy report``: every view of the app in one self-contained HTML file, for sharing.

The report renders the app's templates (:mod:`saywhy.web.views` through
``templates/report.html``) with every picture embedded as a ``data:`` URI and the CSS and
JavaScript inline, under a Content-Security-Policy that lets the page fetch nothing. It
stays fast on large datasets by showing a bounded number of each thing (explained
images, classes, searches, failures; each section says how many of how many) in closed
``<details>`` sections, with thumbnails instead of full images and ``loading="lazy"``.

The file is written atomically (a temporary file beside it, then renamed), and only
ever replaces a file that is itself a saywhy report.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

from saywhy.errors import SaywhyError
from saywhy.web.media import InlineMedia
from saywhy.web.render import render
from saywhy.web.views import ImageRef, Links, Site

MARKER = '<meta name="generator" content="saywhy report">'
REPORT_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
              "form-action 'none'; base-uri 'none'")
SECTIONS = ("explain", "classes", "search", "debug", "evaluation")


class ReportLinks(Links):
    """Links inside the one page: anchors to what the report holds, nothing to what it does not."""

    def __init__(self) -> None:
        self.explained: set[int] = set()
        self.searched: set[str] = set()
        self.classes: set[int] = set()

    def page(self, view: str, **params: Any) -> str | None:
        if view == "explain" and params.get("image") in self.explained:
            return f"#image-{params['image']}"
        if view == "classes" and params.get("class") in self.classes:
            return f"#class-{params['class']}"
        if view == "search" and params.get("q") in self.searched:
            return "#search"
        return None


def check_report_target(out: str | Path) -> Path:
    """Refuse, in one line, to write over anything but a saywhy report (or nothing)."""
    out = Path(out)
    refuse = f"refusing to write the report to {out}"
    if out.suffix.lower() not in (".html", ".htm"):
        raise SaywhyError(f"{refuse}: give a file name ending in .html")
    if out.is_symlink():
        raise SaywhyError(f"{refuse}: it is a link; give a new file name")
    if out.exists():
        if not out.is_file():
            raise SaywhyError(f"{refuse}: it is not a file; give a new file name")
        with open(out, "rb") as handle:
            head = handle.read(4096)
        if MARKER.encode() not in head:
            raise SaywhyError(f"{refuse}: it is a file saywhy did not write, and saywhy only replaces its own "
                              "reports; give a new file name")
    if not out.parent.is_dir():
        raise SaywhyError(f"{refuse}: the folder {out.parent} does not exist")
    return out


def write_report(html: str, out: str | Path) -> Path:
    """Write ``html`` to ``out`` atomically: readers see the old report or the new one, never half of one."""
    out = check_report_target(out)
    handle, tmp = tempfile.mkstemp(prefix=f".{out.name}.partial-", dir=out.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(html)
        os.chmod(tmp, 0o644)
        check_report_target(out)  # again: something may have appeared there meanwhile
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def build_report(session: Any, dataset: Any, *, n_images: int = 24, n_classes: int = 60, n_searches: int = 10,
                 n_failures: int = 30, seed: int = 0, eval_path: str | Path | None = None,
                 title: str = "") -> tuple[str, dict[str, int]]:
    """The report's HTML and how many of each thing it shows.

    Explained images: the misclassified test images first (each with the contrast "why
    not" its label), then a seeded draw of the others, ``n_images`` in all; the first
    ``n_classes`` classes with their Figure 5 filters; searches for the attributes that
    describe the classes; the first ``n_failures`` failures; the last evaluation, if any.
    """
    links = ReportLinks()
    site = Site(session, dataset, InlineMedia(), links=links, eval_path=eval_path)
    report = site.debug_report()
    by_path = site.by_path
    failures = [(by_path[f.path], f.true_index) for f in report.failures if f.path in by_path]
    chosen: list[tuple[Any, Any]] = failures[: n_images // 2]
    taken = {r.image_id for r, _ in chosen}
    rest = [r for r in site.test if r.image_id not in taken]
    chosen += [(r, None) for r in random.Random(seed).sample(rest, min(len(rest), n_images - len(chosen)))]
    links.explained = {r.image_id for r, _ in chosen}
    n_class = len(site.explainer.class_names_)
    class_indices = list(range(min(n_class, n_classes)))
    links.classes = set(class_indices)
    descriptions = [site.explainer.describe(c) for c in class_indices]
    queries = list(dict.fromkeys(t for d in descriptions for t, _ in d.attributes))[:n_searches]
    links.searched = set(queries)

    explained = [site.explain(ImageRef("image", str(r.image_id)), other) for r, other in chosen]
    classes = [site.classes(str(c)) for c in class_indices]
    searches = [site.search(q, top=6, heatmaps=6) for q in queries]
    debug = site.debug(page=1, per_page=max(1, n_failures))
    counts = {"explained": len(explained), "test_images": len(site.test), "failures": report.n_failures,
              "failures_shown": len(debug["failures"]), "classes": len(classes), "all_classes": n_class,
              "searches": len(searches)}
    html = render(
        "report.html", kind="report", inline=True, title="report", current=None,
        nav=[(s.capitalize(), f"#{s}") for s in SECTIONS], explainer_name=title, csp=REPORT_CSP,
        about=f"{len(site.test)} test images of {dataset.root}; every picture is embedded, nothing is fetched.",
        explained=explained,
        explained_note=(f"{len(explained)} of {len(site.test)} test images: {min(len(failures), n_images // 2)} of the "
                        f"{report.n_failures} misclassified ones (each with why not its label), then a seeded draw "
                        f"(seed {seed}); 'saywhy serve' explains any of them."),
        classes=classes,
        classes_note=f"{len(classes)} of {n_class} classes" + ("" if len(classes) == n_class else
                                                                 " (raise --classes to see more)") + ".",
        searches=searches,
        search_note=(f"The {len(searches)} attributes that describe the classes, each with its 6 best test images "
                     "and their heatmaps; 'saywhy serve' searches any attribute."),
        debug=debug, evaluation=site.evaluation())
    return html, counts
