"""What each page shows, asked of the library: the contexts the templates render.

:class:`Site` holds the one :class:`~saywhy.pipeline.ExplainerSession` and its dataset,
and answers each view (explain, classes, search, debug, evaluation) with plain dicts of
sentences, readable numbers and picture URLs from a media sink
(:mod:`saywhy.web.media`). Every number comes from the session, the explainer or
:mod:`saywhy.apps`; nothing here computes an explanation. Calls into the session go
through ``Site.lock``, so that concurrent requests share one model and take turns;
results that depend only on the dataset (its test split's predictions, the debug report,
the canonical images) are computed once and kept.
"""
from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from PIL import Image

from saywhy.data.images import open_image
from saywhy.data.records import Dataset, ImageRecord
from saywhy.errors import SaywhyError
from saywhy.search import ranked_by
from saywhy.web.media import PICTURE, THUMBNAIL, jpeg, overlay
from saywhy.web.uploads import UploadError, UploadStore


class NotFound(UploadError):
    """A name in the request that names nothing the site has (404)."""

    def __init__(self, message: str):
        super().__init__(message, 404)


@dataclass(frozen=True)
class ImageRef:
    """Which image a page is about: a dataset image by its id, or an upload by its content id."""

    kind: str  # "image" or "upload"
    key: str

    def query(self) -> dict[str, str]:
        return {self.kind: self.key}


def score_text(value: float, score_name: str) -> str:
    """A readable score: a calibrated probability as a percentage, the paper's small p(t|x,c) as it is.

    >>> score_text(0.873, "p(t|x): the calibrated probability"), score_text(0.0123, "p(t|x,c), eq. 5: a share")
    ('87%', '0.012')
    """
    return f"{value:.0%}" if score_name.startswith("p(t|x):") else f"{value:.3f}"


class Links:
    """URLs of the app's pages (the report overrides this with anchors in its one page)."""

    def page(self, view: str, **params: Any) -> str | None:
        query = urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
        return f"/{view}" + (f"?{query}" if query else "")


class Site:
    """The session, its dataset and the memory of what was computed, shared by every request."""

    def __init__(self, session: Any, dataset: Dataset, media: Any, *, links: Links | None = None,
                 eval_path: str | Path | None = None, uploads: UploadStore | None = None):
        self.session, self.dataset, self.media = session, session.check_dataset(dataset), media
        self.explainer = session.explainer
        self.links = links or Links()
        self.eval_path = Path(eval_path) if eval_path else None
        self.uploads = uploads or UploadStore()
        self.lock = threading.RLock()  # one model, one request at a time in it
        self.records = {r.image_id: r for r in dataset.records}
        self.by_path = {str(r.path): r for r in dataset.records}
        self.test = dataset.split(train=False) or list(dataset.records)
        self._memo: dict[str, Any] = {}
        self._thumbs: dict[str, bytes] = {}  # the JPEG bytes: the media sink may drop its copy

    # ----- names from the request ----------------------------------------------------------------
    def ref(self, image: str | None = None, upload: str | None = None) -> ImageRef | None:
        if image is not None and upload is not None:
            raise SaywhyError("give image= or upload=, not both")
        if upload is not None:
            self.uploads.get(upload)  # refuses an unknown or malformed id
            return ImageRef("upload", upload)
        if image is None:
            return None
        if not image.strip().isdigit() or int(image) not in self.records:
            raise NotFound(f"no image {image!r} in the dataset: pick one from the browser (image ids are whole numbers)")
        return ImageRef("image", str(int(image)))

    def item(self, ref: ImageRef) -> ImageRecord | Image.Image:
        """What the session explains: the dataset's record (with its box) or the uploaded picture."""
        return self.records[int(ref.key)] if ref.kind == "image" else self.uploads.get(ref.key)

    def picture(self, ref: ImageRef) -> Image.Image:
        item = self.item(ref)
        return open_image(item.path) if isinstance(item, ImageRecord) else item

    def class_index(self, name: str | int) -> int:
        try:
            return self.explainer.class_index(int(name) if str(name).strip().isdigit() else str(name))
        except SaywhyError as error:
            raise NotFound(str(error)) from None

    def class_names(self) -> list[dict[str, Any]]:
        return [{"index": i, "name": self.explainer.readable_name(i)} for i in range(len(self.explainer.class_names_))]

    def label(self, record: ImageRecord) -> str:
        return self.explainer.readable_name(self.dataset.class_index(record.class_id))

    # ----- pictures --------------------------------------------------------------------------------
    def thumbnail(self, record: ImageRecord) -> dict[str, Any]:
        """A dataset image as a thumbnail with its link, label and name."""
        key = str(record.path)
        if key not in self._thumbs:
            try:
                self._thumbs[key] = jpeg(open_image(record.path), THUMBNAIL)
            except SaywhyError:
                self._thumbs[key] = b""
        return {"src": self.media.put(self._thumbs[key]) if self._thumbs[key] else "", "id": record.image_id, "label": self.label(record),
                "name": record.path.name, "href": self.links.page("explain", image=record.image_id)}

    def thumbnail_of_path(self, path: str | None) -> dict[str, Any] | None:
        record = self.by_path.get(str(path)) if path else None
        return self.thumbnail(record) if record else None

    # ----- computed once -----------------------------------------------------------------------
    def _once(self, name: str, compute: Callable[[], Any]) -> Any:
        with self.lock:
            if name not in self._memo:
                self._memo[name] = compute()
            return self._memo[name]

    def test_activations(self):
        """The test split's pooled activations (unreadable images dropped) and the records kept."""
        def compute():
            acts = self.session.activations(self.test, strict=False)
            return acts, [self.test[i] for i in acts.index]
        return self._once("test", compute)

    def debug_report(self):
        from saywhy.apps.debugging import debug_network

        return self._once("debug", lambda: debug_network(self.session, self.dataset, self.test))

    def canonical(self) -> dict[int, str]:
        """Per class index, its canonical image (the training image with the largest logit for it)."""
        from saywhy.apps.debugging import canonical_paths

        return self._once("canonical", lambda: canonical_paths(self.session, self.dataset,
                                                                self.dataset.split(train=True) or self.test))

    def random_image(self, seed: int | None = None) -> int:
        return random.Random(seed).choice(self.test).image_id

    # ----- Explain -----------------------------------------------------------------------------------
    def explain(self, ref: ImageRef, other: str | None = None, attribute: str | None = None) -> dict[str, Any]:
        """Figure 1 for one image: the decision, the sentence, each attribute's heatmap, the CAM,
        and with ``other`` the contrast with that class."""
        item = self.item(ref)
        with self.lock:
            explanation = self.session.explain(item, heatmaps=True)[0]
            chosen = None
            if attribute and attribute.strip():
                chosen = self.session.ground(item, [attribute.strip()])
            contrast = None
            if other not in (None, ""):
                contrast = self.session.contrast(item, self.class_index(other))
        picture = self.picture(ref)
        maps = explanation.heatmaps
        attributes = [{"name": t, "score": score_text(p, explanation.score_name),
                       "heatmap": self.media.put(overlay(picture, maps.image[i])),
                       "href": self.links.page("explain", **ref.query(), attribute=t)}
                      for i, (t, p) in enumerate(explanation.attributes)]
        shown = attributes[0] if attributes else None
        if chosen is not None:
            shown = {"name": chosen.attributes[0], "score": "", "heatmap": self.media.put(overlay(picture, chosen.image[0]))}
        record = item if isinstance(item, ImageRecord) else None
        view = {
            "ref": ref.query(), "anchor": f"{ref.kind}-{ref.key}",
            "picture": self.media.put(jpeg(picture, PICTURE)),
            "name": record.path.name if record else f"upload {ref.key}",
            "label": self.label(record) if record else None,
            "class_name": explanation.class_name, "class_index": explanation.class_index,
            "probability": f"{explanation.probability:.0%}",
            "alternatives": [{"name": n, "probability": f"{p:.0%}"} for n, p in explanation.alternatives],
            "sentence": explanation.sentence, "score_name": explanation.score_name,
            "attributes": attributes, "shown": shown, "notes": explanation.notes,
            "cam": self.media.put(overlay(picture, maps.class_image)),
            "classes": [c for c in self.class_names() if c["index"] != explanation.class_index],
            "contrast": self._contrast(contrast) if contrast else None,
            "correct": None if record is None else self.label(record) == explanation.class_name,
        }
        return view

    def _contrast(self, contrast) -> dict[str, Any]:
        canonical = self.canonical()
        mine, theirs = contrast.explanation, contrast.other
        return {"sentence": contrast.sentence,
                "favour": [{"name": t, "value": f"{v:.2f}"} for t, v in contrast.favour],
                "against": [{"name": t, "value": f"{v:.2f}"} for t, v in contrast.against],
                "sides": [{"class_name": e.class_name, "sentence": e.sentence,
                           "canonical": self.thumbnail_of_path(canonical.get(e.class_index))}
                          for e in (mine, theirs)],
                "other_index": theirs.class_index}

    def explain_json(self, ref: ImageRef) -> dict[str, Any]:
        with self.lock:
            return self.session.explain(self.item(ref))[0].to_dict()

    # ----- Browse ------------------------------------------------------------------------------------
    def browse(self, class_: str | None = None, page: int = 1, per_page: int = 48) -> dict[str, Any]:
        if class_ not in (None, ""):
            c = self.class_index(class_)
            records = [r for r in self.dataset.records if self.dataset.class_index(r.class_id) == c]
            title = f"{self.explainer.readable_name(c)}: every image labelled so"
        else:
            records, title = self.test, "Test images"
        return {"title": title, "class": class_, **self._page(records, page, per_page, "browse", {"class": class_})}

    def _page(self, records: Sequence[ImageRecord], page: int, per_page: int, view: str,
              params: dict[str, Any]) -> dict[str, Any]:
        pages = max(1, -(-len(records) // per_page))
        if not 1 <= page <= pages:
            raise NotFound(f"page {page} does not exist: there are {pages}")
        shown = records[(page - 1) * per_page: page * per_page]
        return {"images": [self.thumbnail(r) for r in shown], "page": page, "pages": pages, "total": len(records),
                "previous": self.links.page(view, **params, page=page - 1) if page > 1 else None,
                "next": self.links.page(view, **params, page=page + 1) if page < pages else None}

    # ----- Classes -----------------------------------------------------------------------------------
    def classes(self, class_: str | None = None, n_examples: int = 6, n_filters: int = 3, k: int = 4) -> dict[str, Any]:
        """Eq. 7-8's description of a class with example images, and its Figure 5 filters."""
        from saywhy.apps.gallery import class_filters

        if class_ in (None, ""):
            return {"classes": [{**c, "href": self.links.page("classes", **{"class": c["index"]})}
                                for c in self.class_names()], "class": None}
        c = self.class_index(class_)
        description = self.explainer.describe(c)
        acts, kept = self.test_activations()
        figures = class_filters(self.explainer, acts.pooled, [str(r.path) for r in kept], c, n_filters, k)
        examples = [r for r in self.dataset.records if self.dataset.class_index(r.class_id) == c][:n_examples]
        return {"class": {
            "index": c, "name": description.class_name, "sentence": description.sentence,
            "score_name": description.score_name,
            "attributes": [{"name": t, "score": score_text(p, description.score_name),
                            "href": self.links.page("search", q=t)} for t, p in description.attributes],
            "examples": [self.thumbnail(r) for r in examples],
            "browse": self.links.page("browse", **{"class": c}),
            "filters": [{"filter": f["filter"], "share": f"{f['share']:.1%}",
                         "attributes": [{"name": a["attribute"], "p": f"{a['p']:.3f}"} for a in f["attributes"]],
                         "images": [dict(self.thumbnail_of_path(i["path"]) or {}, activation=f"{i['activation']:.2f}")
                                    for i in f["images"]]} for f in figures]}}

    # ----- Search ------------------------------------------------------------------------------------
    def search(self, query: str | None, top: int = 12, heatmaps: int = 12) -> dict[str, Any]:
        """Figure 6-7: the test images ranked for the typed attributes, each with their heatmaps."""
        attributes = [a.strip() for a in (query or "").split(",") if a.strip()]
        view: dict[str, Any] = {"query": query or "", "vocabulary": list(self.explainer.vocabulary_), "hits": None}
        if not attributes:
            return view
        with self.lock:
            result = self.session.search(attributes, self.test, top=top)
            found = [(hit, self.by_path[hit.path]) for hit in result.hits if hit.path in self.by_path]
            mapped = [r for _, r in found[:heatmaps]]
            # one forward pass for every mapped hit: explain() grounds the query attributes on each
            maps = [e.heatmaps for e in self.session.explain(mapped, heatmaps=list(result.query))] if mapped else []
        hits = []
        for position, (hit, record) in enumerate(found):
            heat = maps[position] if position < len(maps) else None
            picture = open_image(record.path) if heat is not None else None
            hits.append({"rank": hit.rank, "thumb": self.thumbnail(record), "predicted": hit.predicted_class,
                         "in_explanation": hit.in_explanation, "log_score": f"{hit.log_score:.2f}",
                         "scores": [{"name": t, "score": score_text(p, self.explainer.score_name)}
                                    for t, p in hit.probabilities.items()],
                         "heatmaps": [{"name": t, "src": self.media.put(overlay(picture, heat.image[i], THUMBNAIL * 3 // 2))}
                                      for i, t in enumerate(heat.attributes)] if heat is not None else []})
        view.update(hits=hits, attributes=result.query, n_images=result.n_images, ranked_by=ranked_by(self.explainer),
                    n_in_explanation=result.n_in_explanation, top_k=result.top_k, n_unreadable=result.n_unreadable)
        return view

    # ----- Debug -------------------------------------------------------------------------------------
    def debug(self, page: int = 1, per_page: int = 20) -> dict[str, Any]:
        """Figure 8: every misclassified test image with both rationales, what misleads, what is confused."""
        report = self.debug_report()
        pages = max(1, -(-len(report.failures) // per_page))
        if not 1 <= page <= pages:
            raise NotFound(f"page {page} does not exist: there are {pages}")
        failures = []
        for f in report.failures[(page - 1) * per_page: page * per_page]:
            record = self.by_path.get(f.path)
            failures.append({
                "thumb": self.thumbnail(record) if record else None,
                "href": self.links.page("explain", image=record.image_id, other=f.true_index) if record else None,
                "true_class": f.true_class, "predicted_class": f.predicted_class,
                "true_rationale": f.true_rationale["sentence"], "predicted_rationale": f.predicted_rationale["sentence"],
                "contrast": f.contrast,
                "misleading": [{"name": t, "value": f"{v:.2f}"} for t, v in f.misleading],
                "missed": [{"name": t, "value": f"{v:.2f}"} for t, v in f.missed],
                "canonical_true": self.thumbnail_of_path(f.canonical_true),
                "canonical_predicted": self.thumbnail_of_path(f.canonical_predicted)})
        return {"summary": report.summary(), "n_failures": report.n_failures, "canonical_rule": report.canonical_rule,
                "misleading": report.misleading_attributes[:15], "missed": report.missed_attributes[:15],
                "confused": report.confused_pairs[:15], "failures": failures, "page": page, "pages": pages,
                "previous": self.links.page("debug", page=page - 1) if page > 1 else None,
                "next": self.links.page("debug", page=page + 1) if page < pages else None,
                "skipped": {k: v for k, v in report.skipped.items() if v}}

    # ----- Evaluation --------------------------------------------------------------------------------
    def evaluation(self) -> dict[str, Any]:
        """The tables of the last ``saywhy evaluate`` run on this dataset with this explainer's settings."""
        from saywhy.evaluate import markdown

        found, looked = self._evaluation_file()
        if found is None:
            return {"blocks": None, "looked": looked}
        try:
            blocks = markdown_blocks(markdown(json.loads(found.read_text()), f"{found.name}: saywhy evaluate"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise SaywhyError(f"{found} is not a result this saywhy can read (another version?): "
                              "run 'saywhy evaluate' again") from None
        return {"blocks": blocks, "file": found.name, "looked": looked}

    def _evaluation_file(self) -> tuple[Path | None, str]:
        if self.eval_path is not None and self.eval_path.is_file():
            return self.eval_path, str(self.eval_path)
        folder = self.eval_path or Path("benchmarks/results")
        candidates = sorted(folder.glob("*_eval.json"), key=lambda p: p.stat().st_mtime, reverse=True) \
            if folder.is_dir() else []
        root, config = str(self.dataset.root), self.explainer.config.__dict__
        for path in candidates:
            try:
                result = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if result.get("dataset") == root and result.get("explainer_config") == config:
                return path, str(folder)
        return None, str(folder)


def markdown_blocks(text: str) -> list[dict[str, Any]]:
    """``evaluate.markdown``'s output as blocks to draw: headings, paragraphs and tables.

    >>> markdown_blocks("### T\\n\\nsome text\\n\\n| a | b |\\n| --- | --- |\\n| 1 | 2 |\\n")
    [{'kind': 'heading', 'text': 'T'}, {'kind': 'text', 'text': 'some text'}, {'kind': 'table', 'head': ['a', 'b'], 'rows': [['1', '2']]}]
    """
    blocks: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("|"):
            cells = [c.strip().replace("`", "") for c in line.strip("|").split("|")]
            if blocks and blocks[-1]["kind"] == "table":
                if not all(set(c) <= {"-", ":"} for c in cells):
                    blocks[-1]["rows"].append(cells)
            else:
                blocks.append({"kind": "table", "head": cells, "rows": []})
        elif line.startswith("#"):
            blocks.append({"kind": "heading", "text": line.lstrip("#").strip()})
        else:
            blocks.append({"kind": "text", "text": line.replace("`", "")})
    return blocks
