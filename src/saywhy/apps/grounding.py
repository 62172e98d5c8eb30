"""Visual attribute grounding (eq. 9) on real images, its baselines, and Figure 5 as data.

One forward pass per image keeps the final conv maps f(x); every queried attribute's
heatmap is then eq. 9 in :mod:`saywhy.core.grounding`. Heatmaps are placed on the
original image through the box the network saw (:meth:`Preprocess.seen_box`), so a bounding-box
crop and the non-uniform stretch to a square are undone exactly.

Baselines for the PCK table (:func:`grounding_points`), all from the same pass, each a
:class:`GroundingMethod` in the :data:`GROUNDING_METHODS` registry:
``constant`` (alpha_k = 1/F, the mean map), ``cam`` (alpha = W[c] of the predicted class),
``gradcam`` (Grad-CAM of the predicted class score), ``bbox_center`` and ``random``
(uniform over the image, seeded). With global average pooling straight into the linear
head, Grad-CAM's channel weights are W[c] / (h*w), so its peak is CAM's peak unless
every position of CAM is negative; both are kept because other networks differ.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from saywhy.core.grounding import (
    Box,
    attribute_scores,
    cells_to_image,
    constant_alpha,
    normalize_heatmaps,
    peak_cells,
    upsample_heatmap,
)
from saywhy.core.part_maps import part_grounding_scores
from saywhy.data.images import image_size
from saywhy.data.records import ImageRecord
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer
from saywhy.metrics.pck import (
    ALPHAS,
    PCKResult,
    load_attribute_parts,
    most_frequent_attributes,
    part_discrimination,
    pck,
)
from saywhy.pipeline import ExplainerSession

def canonical(phrase: str, synonyms: Mapping[str, str] | None) -> str:
    """A phrase with each word mapped through ``synonyms`` ("gray bill" -> "grey beak")."""
    return " ".join((synonyms or {}).get(word, word) for word in phrase.lower().split())


def attribute_alphas(explainer: Explainer, attributes: Sequence[str],
                     synonyms: Mapping[str, str] | None = None) -> np.ndarray:
    """alpha of eq. 9 for each attribute, (T, F): the column p(t|f_k) of the fitted p.d.f., or the
    evidence model's weights a_t (:meth:`Explainer.grounding_alphas`).

    With ``synonyms``, an attribute is matched on its canonical form and alpha sums the
    columns of all its spellings ("grey beak" = "gray bill" + "grey bill" + ...), the
    probability of the union of those disjoint outcomes. An attribute not in the
    vocabulary is a :class:`SaywhyError` naming the closest known ones.

    >>> import scipy.sparse as sp
    >>> ex = Explainer().fit(np.eye(2), sp.csr_matrix(np.eye(2)), ["red crown", "blue wing"], np.eye(2), ["A", "B"])
    >>> attribute_alphas(ex, ["red crown"]).shape
    (1, 2)
    """
    pdf = explainer.grounding_alphas()
    columns: dict[str, list[int]] = {}
    for j, term in enumerate(explainer.vocabulary_):
        columns.setdefault(canonical(term, synonyms) if synonyms else term, []).append(j)
    rows = []
    for attribute in attributes:
        key = canonical(attribute, synonyms) if synonyms else " ".join(attribute.lower().split())
        if key not in columns:
            close = difflib.get_close_matches(key, list(columns), n=5, cutoff=0.5)
            raise SaywhyError(f"attribute {attribute!r} is not in the explainer's vocabulary; closest: "
                              f"{', '.join(close) or 'none'} (the vocabulary comes from the fitting captions)")
        rows.append(pdf[:, columns[key]].sum(axis=1))
    return np.stack(rows) if rows else np.zeros((0, pdf.shape[0]))


@dataclass
class Grounding:
    """Eq. 9 heatmaps of several attributes for one image, and where they sit on it."""

    image: Path
    attributes: list[str]
    scores: np.ndarray  # (T, h, w): sum_k alpha_k f_k(x), before sigma
    heatmaps: np.ndarray  # (T, h, w): sigma of the scores, eq. 9
    box: Box  # the region of the original image the network saw
    image_size: tuple[int, int]  # (W, H) of the original image
    predicted: int  # the network's class

    def peaks(self) -> np.ndarray:
        """(T, 2) image (x, y) of each heatmap's maximum (the centre of its cell)."""
        return cells_to_image(peak_cells(self.scores), self.scores.shape[-2:], self.box)

    def upsampled(self, i: int) -> np.ndarray:
        """Heatmap ``i`` at the original image's (H, W) pixels (0 outside the crop)."""
        return upsample_heatmap(self.heatmaps[i], self.box, self.image_size)


def ground(session: ExplainerSession, image: ImageRecord | str | Path, attributes: Sequence[str],
           sigma: str = "minmax", box: tuple[float, float, float, float] | None = None) -> Grounding:
    """Eq. 9 for every attribute in ``attributes`` on one image, from one forward pass
    (:meth:`ExplainerSession.ground`), with ``sigma`` of eq. 9 for the heatmaps.

    >>> g = ground(session, "bird.jpg", ["red crown", "black wing"])    # doctest: +SKIP
    >>> g.peaks()[0]                                                      # doctest: +SKIP
    array([41., 23.])
    """
    maps = session.ground(image, attributes, box=box)
    path = image.path if isinstance(image, ImageRecord) else Path(image)
    return Grounding(path, list(attributes), maps.layer, normalize_heatmaps(maps.layer, sigma), maps.box,
                     maps.image_size, maps.class_index)


# ----- grounding methods: eq. 9 and its baselines ----------------------------------------------
@dataclass
class GroundingItem:
    """One image of a batch with the attributes queried on it: what a grounding method may use."""

    record: ImageRecord
    row: int  # its position in ``GroundingBatch.records`` (for results of ``prepare``)
    attributes: list[str]  # the queried attributes, each once
    alpha: np.ndarray  # (T, F): eq. 9's alpha of each queried attribute
    maps: np.ndarray  # (F, h, w): the final conv maps f(x)
    logits: np.ndarray  # (classes,): the network's scores
    size: tuple[int, int]  # (W, H) of the original image
    box: Box  # the region of the original image the network saw
    explainer: Explainer | None = None  # the session's, for methods that read more than alpha

    @property
    def predicted(self) -> int:
        return int(self.logits.argmax())


@dataclass
class GroundingBatch:
    """One forward pass over readable images, and the images of it that have queried attributes."""

    session: ExplainerSession
    records: list[ImageRecord]  # every readable image of the pass, in row order
    items: list[GroundingItem]  # those with at least one queried attribute
    synonyms: Mapping[str, str] | None = None  # how the queried attributes were canonicalized


class GroundingMethod:
    """A way to predict where each queried attribute is on an image (one row of Table 1).

    :meth:`ground` owns the loop: :meth:`prepare` once per batch (work shared by its
    images, e.g. a backward pass), then :meth:`points` for each image: (T, 2) image
    (x, y) pixels, one per queried attribute. Subclasses register with :func:`register`
    under ``name``; ``label`` is how tables name them.
    """

    name: ClassVar[str]
    label: ClassVar[str]

    def __init__(self, seed: int = 0):
        self.seed = seed

    def ground(self, batch: GroundingBatch) -> list[np.ndarray]:
        """(T, 2) points for each of ``batch.items``, in order."""
        self.prepare(batch)
        return [self.points(item) for item in batch.items]

    def prepare(self, batch: GroundingBatch) -> None:
        """Work shared by the batch's images; nothing by default."""

    def points(self, item: GroundingItem) -> np.ndarray:
        raise NotImplementedError


class HeatmapMethod(GroundingMethod):
    """A method that predicts the peak of a heatmap on the final conv grid.

    :meth:`heatmaps` gives (T, h, w) scores, one per queried attribute, or (1, h, w) when
    the heatmap does not depend on the attribute; the predicted point is its maximum's
    cell centre on the original image (sigma of eq. 9 left out: it does not move the peak).
    """

    def heatmaps(self, item: GroundingItem) -> np.ndarray:
        raise NotImplementedError

    def points(self, item: GroundingItem) -> np.ndarray:
        scores = self.heatmaps(item)
        xy = cells_to_image(peak_cells(scores), scores.shape[-2:], item.box)
        return np.broadcast_to(xy, (len(item.attributes), 2))


GROUNDING_METHODS: dict[str, type[GroundingMethod]] = {}


def register(cls: type[GroundingMethod]) -> type[GroundingMethod]:
    """Class decorator: make a :class:`GroundingMethod` available by its ``name``."""
    if cls.name in GROUNDING_METHODS:
        raise SaywhyError(f"grounding method {cls.name!r} is registered twice")
    GROUNDING_METHODS[cls.name] = cls
    return cls


def list_grounding_methods() -> list[str]:
    """Names of the registered grounding methods, in registration order (the order of Table 1).

    >>> list_grounding_methods()
    ['proposed', 'part_contrast', 'part_rest', 'part_maps', 'part_maps_alpha', 'constant', 'cam', 'gradcam', 'bbox_center', 'random', 'keypoint_cell']
    """
    return list(GROUNDING_METHODS)


@register
class Proposed(HeatmapMethod):
    """Eq. 9: sum_k alpha_k f_k(x) with each attribute's own alpha."""

    name, label = "proposed", "proposed"

    def heatmaps(self, item: GroundingItem) -> np.ndarray:
        if item.explainer is not None:  # the explainer's own grounding: eq. 9, or its part maps
            return item.explainer.grounding_scores(item.maps, item.alpha, item.attributes)
        return attribute_scores(item.maps, item.alpha)


def part_contrast_alphas(explainer: Explainer, part_map: Mapping[str, Sequence[str]],
                         synonyms: Mapping[str, str] | None = None, same_adjective: bool = True) -> dict[str, np.ndarray]:
    """Per attribute (canonical form), eq. 9's alpha minus the mean alpha of the attributes with the
    same adjective(s) and a part disjoint from its own ("red crown" minus the mean of "red breast",
    "red belly", ...): what tells the crown's red from the rest of the red bird. Attributes whose noun
    names no part, or with no such neighbour, keep their alpha. ``same_adjective=False`` subtracts
    the mean alpha of every attribute of another part, whatever its adjective (part against the rest).

    >>> import scipy.sparse as sp
    >>> ex = Explainer().fit(np.eye(3), sp.csr_matrix(np.eye(3)), ["red crown", "red tail", "blue tail"], np.eye(3), ["A", "B", "C"])
    >>> a = part_contrast_alphas(ex, {"crown": ["crown"], "tail": ["tail"]})
    >>> np.allclose(a["red crown"], attribute_alphas(ex, ["red crown"])[0] - attribute_alphas(ex, ["red tail"])[0])
    True
    """
    from saywhy.metrics.pck import attribute_parts

    keys = list(dict.fromkeys(canonical(t, synonyms) if synonyms else t for t in explainer.vocabulary_))
    alphas = dict(zip(keys, attribute_alphas(explainer, keys, synonyms)))
    by_adjective: dict[str, list[tuple[str, set]]] = {}
    for key in keys:
        parts = set(attribute_parts(key, part_map))
        if parts and len(key.split()) > 1:
            group = " ".join(key.split()[:-1]) if same_adjective else ""
            by_adjective.setdefault(group, []).append((key, parts))
    out = dict(alphas)
    for group in by_adjective.values():
        for key, parts in group:
            others = [alphas[k] for k, p in group if not (p & parts)]
            if others:
                out[key] = alphas[key] - np.mean(others, axis=0)
    return out


@register
class PartContrast(HeatmapMethod):
    """Eq. 9 with part-aware weights: each attribute's alpha minus the mean alpha of same-adjective
    attributes of other parts (:func:`part_contrast_alphas`), so same-colour parts differ."""

    name, label = "part_contrast", "proposed, part-contrasted alpha"
    same_adjective: ClassVar[bool] = True

    def prepare(self, batch: GroundingBatch) -> None:
        key = (id(batch.session.explainer), repr(batch.synonyms))
        if getattr(self, "_key", None) != key:
            self._alphas = part_contrast_alphas(batch.session.explainer, load_attribute_parts(), batch.synonyms,
                                                self.same_adjective)
            self._key = key

    def heatmaps(self, item: GroundingItem) -> np.ndarray:
        alpha = np.stack([self._alphas.get(t, a) for t, a in zip(item.attributes, item.alpha)])
        return attribute_scores(item.maps, alpha)


@register
class PartVersusRest(PartContrast):
    """Eq. 9 with each attribute's alpha minus the mean alpha of every attribute of another part."""

    name, label = "part_rest", "proposed, alpha against other parts'"
    same_adjective = False


@register
class PartMapsMethod(HeatmapMethod):
    """Part maps learned from training keypoints (:meth:`Explainer.part_heatmaps`): an attribute's heatmap
    is the log-odds that its part is at each cell; attributes whose noun names no part, and every
    attribute of an explainer fitted without keypoints, fall back to eq. 9."""

    name, label = "part_maps", "part maps (training keypoints)"
    mode: ClassVar[str] = "maps"

    def heatmaps(self, item: GroundingItem) -> np.ndarray:
        part, known = item.explainer.part_heatmaps(item.maps, item.attributes)
        return part_grounding_scores(attribute_scores(item.maps, item.alpha), part, known, self.mode)


@register
class PartMapsAlpha(PartMapsMethod):
    """Part maps plus eq. 9: the sum of the two maps, each standardized over its cells, so that the
    attribute's own evidence picks among the places its part may be."""

    name, label = "part_maps_alpha", "part maps + eq. 9"
    mode = "maps_alpha"


@register
class ConstantPDF(HeatmapMethod):
    """The constant p.d.f.: alpha_k = 1/F for every attribute, i.e. the mean map."""

    name, label = "constant", "constant p.d.f."

    def heatmaps(self, item: GroundingItem) -> np.ndarray:
        return attribute_scores(item.maps, constant_alpha(item.maps.shape[0]))


@register
class CAM(HeatmapMethod):
    """CAM of the predicted class: alpha = W[c], the linear head's row."""

    name, label = "cam", "CAM peak"

    def prepare(self, batch: GroundingBatch) -> None:
        self.weights = batch.session.explainer.head_weights_

    def heatmaps(self, item: GroundingItem) -> np.ndarray:
        return attribute_scores(item.maps, self.weights[item.predicted][None, :])


@register
class GradCAM(HeatmapMethod):
    """Grad-CAM of the predicted class score (:meth:`ExplainerSession.grad_cam`), one backward pass per batch."""

    name, label = "gradcam", "Grad-CAM peak"

    def prepare(self, batch: GroundingBatch) -> None:
        self.scores = None
        if batch.items:
            self.scores = batch.session.grad_cam(batch.records)

    def heatmaps(self, item: GroundingItem) -> np.ndarray:
        return self.scores[item.row][None]


@register
class BoxCentre(GroundingMethod):
    """The centre of the bounding box (of the whole image without one), for every attribute."""

    name, label = "bbox_center", "box centre"

    def points(self, item: GroundingItem) -> np.ndarray:
        x, y, w, h = item.record.bbox or (0.0, 0.0, *item.size)
        return np.array([[x + w / 2, y + h / 2]] * len(item.attributes))


@register
class Random(GroundingMethod):
    """Uniform over the whole image, seeded: the same seed and images give the same points."""

    name, label = "random", "random"

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.rng = np.random.default_rng(seed)

    def points(self, item: GroundingItem) -> np.ndarray:
        return self.rng.uniform(0, 1, (len(item.attributes), 2)) * item.size


@register
class KeypointCell(GroundingMethod):
    """An upper reference, not a method: the centre of the final-map cell that holds the attribute's
    own part keypoint (the first visible one), i.e. the best any peak on this grid can do. It reads
    the ground truth, and bounds PCK and part discrimination at the network's map resolution. An
    attribute with no visible keypoint of its part gets the box centre (it is not scored anyway)."""

    name, label = "keypoint_cell", "keypoint's own cell (upper reference)"

    def points(self, item: GroundingItem) -> np.ndarray:
        from saywhy.metrics.pck import attribute_parts

        part_map = load_attribute_parts()
        h, w = item.maps.shape[-2:]
        x0, y0, x1, y1 = item.box
        out = []
        for attribute in item.attributes:
            visible = [item.record.keypoints[p] for p in attribute_parts(attribute, part_map)
                       if p in item.record.keypoints and item.record.keypoints[p].visible]
            if not visible:
                out.append(((x0 + x1) / 2, (y0 + y1) / 2))
                continue
            col = min(max(int((visible[0].x - x0) / max(x1 - x0, 1e-9) * w), 0), w - 1)
            row = min(max(int((visible[0].y - y0) / max(y1 - y0, 1e-9) * h), 0), h - 1)
            out.append(tuple(cells_to_image(np.array([row, col]), (h, w), item.box)))
        return np.array(out, dtype=np.float64).reshape(len(item.attributes), 2)


# ----- the PCK experiment ----------------------------------------------------------------------
def _image_size(path: Path) -> tuple[int, int]:
    return image_size(path)  # the upright image's, as the network and the keypoints see it


def grounding_points(session: ExplainerSession, records: Sequence[ImageRecord], documents: Sequence[Sequence[str]],
                     attributes: Sequence[str], methods: Sequence[str] | None = None,
                     synonyms: Mapping[str, str] | None = None, seed: int = 0,
                     batch_size: int = 128) -> dict[str, list[tuple[tuple[float, float], str, ImageRecord]]]:
    """Per method (default: every registered one), the predicted (point, attribute, record) of every queried pair.

    An image's queried attributes are those of its document that are in ``attributes``
    (each once). Unreadable images are left out. Points are in original image pixels.
    """
    methods = list_grounding_methods() if methods is None else list(methods)
    unknown = sorted(set(methods) - set(GROUNDING_METHODS))
    if unknown:
        raise SaywhyError(f"unknown grounding method(s) {', '.join(unknown)}: "
                          f"choose from {', '.join(list_grounding_methods())}")
    runners = {m: GROUNDING_METHODS[m](seed=seed) for m in methods}
    wanted = list(dict.fromkeys(attributes))
    alpha_all = attribute_alphas(session.explainer, wanted, synonyms) if wanted else None
    position = {t: i for i, t in enumerate(wanted)}
    points: dict[str, list] = {m: [] for m in methods}
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        acts = session.activations(chunk, keep_maps=True, strict=False)
        kept = [chunk[i] for i in acts.index]
        items = []
        for row, record in enumerate(kept):
            queried = [t for t in dict.fromkeys(documents[start + acts.index[row]]) if t in position]
            if not queried:
                continue
            size = _image_size(record.path)
            items.append(GroundingItem(record, row, queried, alpha_all[[position[t] for t in queried]],
                                       acts.maps[row], acts.logits[row], size,
                                       session.preprocess.seen_box(size, record.bbox), session.explainer))
        batch = GroundingBatch(session, kept, items, synonyms)
        for method, runner in runners.items():
            for item, found in zip(items, runner.ground(batch)):
                points[method] += [((float(p[0]), float(p[1])), t, item.record) for p, t in zip(found, item.attributes)]
    return points


@dataclass
class GroundingPCK:
    """Table 1: PCK of every method on the same (image, attribute) pairs."""

    attributes: list[str]  # the most frequent groundable attributes that name a part
    results: dict[str, PCKResult]  # method -> PCK
    skipped_images: dict[str, int]
    discrimination: dict[str, dict] = field(default_factory=dict)  # method -> part discrimination

    def to_dict(self) -> dict:
        return {"attributes": self.attributes, "skipped_images": self.skipped_images,
                "results": {m: r.to_dict() for m, r in self.results.items()},
                "part_discrimination": self.discrimination}


def grounding_pck(session: ExplainerSession, records: Sequence[ImageRecord],
                  documents: Sequence[Sequence[str] | None], part_map: Mapping[str, Sequence[str]] | None = None,
                  n_attributes: int = 50, methods: Sequence[str] | None = None, alphas: Sequence[float] = ALPHAS,
                  synonyms: Mapping[str, str] | None = None, seed: int = 0) -> GroundingPCK:
    """The paper's PCK experiment: ground each image's attributes, score peaks against keypoints.

    ``documents[i]`` lists image i's attributes (parsed from its captions, or given), None
    where it has none. Only the ``n_attributes`` attributes present in most images whose
    noun names a part, and that the explainer knows, are queried. With ``synonyms``,
    documents and vocabulary are compared in canonical form ("gray bill" = "grey beak").

    >>> table = grounding_pck(session, test_records, caption_attributes)    # doctest: +SKIP
    >>> table.results["proposed"].pck[0.1]                                   # doctest: +SKIP
    0.41
    """
    part_map = load_attribute_parts() if part_map is None else part_map
    if synonyms:
        documents = [None if d is None else [canonical(t, synonyms) for t in d] for d in documents]
    known = {canonical(t, synonyms) for t in session.explainer.vocabulary_} if synonyms else set(session.explainer.vocabulary_)
    with_docs = [(r, d) for r, d in zip(records, documents) if d]
    attributes = most_frequent_attributes((d for _, d in with_docs), part_map, n_attributes, allowed=known)
    chosen = set(attributes)
    used = [(r, d) for r, d in with_docs if chosen.intersection(d)]
    points = grounding_points(session, [r for r, _ in used], [d for _, d in used], attributes, methods,
                              synonyms, seed)
    scored_images = {id(record) for _, _, record in next(iter(points.values()), [])}
    skipped = {"images without attributes": len(records) - len(with_docs),
               "images with none of the chosen attributes": len(with_docs) - len(used),
               "unreadable images": len(used) - len(scored_images)}
    results = {m: pck(((p, t, r.keypoints, r.bbox) for p, t, r in found), part_map, alphas) for m, found in points.items()}
    return GroundingPCK(attributes, results, skipped, discrimination_by_method(points, part_map))


def discrimination_by_method(points: Mapping[str, Sequence[tuple[tuple[float, float], str, ImageRecord]]],
                             part_map: Mapping[str, Sequence[str]]) -> dict[str, dict]:
    """Per method, the part discrimination rate (:func:`saywhy.metrics.pck.part_discrimination`) of the
    grounded (point, attribute, record) triples, pairs taken within each image."""
    out = {}
    for method, found in points.items():
        by_image: dict[int, tuple[ImageRecord, list]] = {}
        for point, attribute, record in found:
            by_image.setdefault(id(record), (record, []))[1].append((point, attribute))
        out[method] = part_discrimination(((pts, r.keypoints) for r, pts in by_image.values()), part_map).to_dict()
    return out


def _path(item: ImageRecord | str | Path) -> str:
    return str(item.path if isinstance(item, ImageRecord) else item)


# ----- Figure 5 --------------------------------------------------------------------------------
def filter_figure(explainer: Explainer, session: ExplainerSession, records: Sequence[ImageRecord | str | Path],
                  filter_index: int, k: int = 8) -> dict:
    """The paper's Figure 5 for one filter, as JSON-able data.

    ``attributes``: the filter's top-k attributes by p(t|f), each with p(t|f) and the
    unnormalized p.d.f. p(t) * sum_x p(f|x) p(x|t) (eq. 1 before normalizing, the bars of
    Figure 5). ``images``: the k images of ``records`` whose pooled activation of the
    filter is largest.

    >>> figure = filter_figure(session.explainer, session, test_records, 17)   # doctest: +SKIP
    >>> figure["attributes"][0]["attribute"], figure["images"][0]["path"]        # doctest: +SKIP
    ('red crown', '.../Crimson_Tanager_0006.jpg')
    """
    n_filters = explainer.head_weights_.shape[1]  # raises if the explainer is not fitted
    if not 0 <= filter_index < n_filters:
        raise SaywhyError(f"filter {filter_index} is out of range 0..{n_filters - 1}")
    pdf = explainer.filter_attribute_pdf_[filter_index]
    unnormalized = explainer.unnormalized_filter_pdf(filter_index)
    top_terms = np.argsort(-pdf, kind="stable")[:k]
    acts = session.activations(records, strict=False)
    activation = acts.pooled[:, filter_index]
    top_images = np.argsort(-activation, kind="stable")[:k]
    return {
        "filter": int(filter_index),
        "attributes": [{"attribute": explainer.vocabulary_[j], "p": float(pdf[j]), "unnormalized": float(unnormalized[j])}
                       for j in top_terms],
        "images": [{"path": _path(records[acts.index[i]]), "activation": float(activation[i])} for i in top_images],
    }
