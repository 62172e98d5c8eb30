"""The paper's three explanation figures (1, 3 and 8) computed as data; :mod:`saywhy.render.gallery` draws them.

- Figure 3: a seeded draw of test images, each with the explanation of its predicted
  class, marked right or wrong against its label.
- Figure 1: one misclassified test image: the CAM of the predicted (and of the true)
  class over it, "This is a P because ..." and "This is a T because ..." (the
  explanation with the class given, eq. 5-6) and the contrast "P and not T". Where no
  test image is misclassified, the test image with the smallest margin between its
  top two classes stands in, and the page says so.
- Figure 8: up to three failures with a canonical image of the true and of the
  predicted class and the rationale for each (:mod:`saywhy.apps.debugging`).

:func:`build_gallery` computes the figures as data, with one forward pass over the test
split (plus one image with its maps for the CAM, and the training images of the classes
in Figure 8 for their canonical images); :func:`write_gallery` draws them. The page is
self-contained: thumbnails are base64 JPEGs, the CAM figure a base64 PNG (also written
beside the page as ``figure1_cam.png``). matplotlib is only imported to draw the CAM.

Order of the images: the Figure 3 draw is ``random.Random(seed).sample`` over the
readable test images, the same draw as ``saywhy demo --seed``; Figure 1 is the first
failure in that order continued (drawn images first, then the rest in seeded order), and
Figure 8 the first three.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from saywhy.apps.debugging import (
    CANONICAL_RULE,
    Failure,
    canonical_paths,
    explain_failures,
)
from saywhy.core.grounding import normalize_heatmaps, upsample_heatmap
from saywhy.data.images import open_image
from saywhy.data.records import Dataset, ImageRecord
from saywhy.errors import SaywhyError

THUMBNAIL = 160
CAM_FILE = "figure1_cam.png"


def class_activation_map(weights: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """CAM of one class on one image: sum_k w_{c,k} f_k(x), (h, w), at feature-map resolution.

    >>> maps = np.arange(8.0).reshape(2, 2, 2)
    >>> class_activation_map(np.array([1.0, -1.0]), maps).tolist()
    [[-4.0, -4.0], [-4.0, -4.0]]
    """
    maps = np.asarray(maps, np.float64)
    weights = np.asarray(weights, np.float64)
    if maps.ndim != 3 or weights.shape != maps.shape[:1]:
        raise SaywhyError(f"CAM needs (filters,) weights and (filters, h, w) maps, got {weights.shape} and {maps.shape}")
    return np.tensordot(weights, maps, axes=1)


@dataclass
class Sample:
    """Figure 3: one test image and the explanation of its predicted class."""

    path: str
    image_id: int | None
    true_class: str
    predicted_class: str
    correct: bool
    sentence: str
    attributes: list[tuple[str, float]]


@dataclass
class Misclassified:
    """Figure 1: one image explained for the predicted class and for another one.

    ``other_class`` is the labelled class of a misclassified image; where no image is
    misclassified it is the runner-up class of the closest call (``misclassified``
    False, and ``note`` says so). CAMs are minmax-scaled to [0, 1] at the image's pixels
    (0 outside the crop the network saw); they are drawn, not written to JSON.
    """

    path: str
    image_id: int | None
    true_class: str
    predicted_class: str
    other_class: str
    misclassified: bool
    note: str
    margin: float  # logit of the predicted class minus that of the other class
    predicted_sentence: str
    other_sentence: str
    contrast: str
    cam_predicted: np.ndarray = field(repr=False)
    cam_other: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("cam_")}
        data["cam"] = CAM_FILE
        return data


@dataclass
class Gallery:
    """Figures 3, 1 and 8 as data; :func:`write_gallery` draws them."""

    seed: int
    n_test: int  # readable test images
    samples: list[Sample]
    figure1: Misclassified
    failures: list[Failure]  # up to three, for Figure 8
    n_failures: int  # among all test images
    debug_summary: str
    skipped: dict[str, int] = field(default_factory=dict)
    canonical_rule: str = CANONICAL_RULE

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "n_test": self.n_test, "skipped": self.skipped,
                "figure3": [asdict(s) for s in self.samples], "figure1": self.figure1.to_dict(),
                "figure8": {"summary": self.debug_summary, "n_failures": self.n_failures,
                            "canonical_rule": self.canonical_rule, "failures": [asdict(f) for f in self.failures]}}


def _seeded_order(n: int, n_samples: int, seed: int) -> list[int]:
    """The draw of ``saywhy demo --seed`` first, then every other position in seeded order."""
    rng = random.Random(seed)
    drawn = rng.sample(range(n), min(n_samples, n))
    taken = set(drawn)
    rest = [i for i in range(n) if i not in taken]
    rng.shuffle(rest)
    return drawn + rest


def build_gallery(session: Any, dataset: Dataset, seed: int = 0, n_samples: int = 6, n_failures: int = 3,
                  k: int = 3, progress: bool = False) -> Gallery:
    """Figures 3, 1 and 8 for the test split of ``dataset``.

    ``session`` is a :class:`saywhy.pipeline.ExplainerSession` fitted on the dataset's
    classes; ``k`` is the number of separating attributes per side of a contrast.

    >>> gallery = build_gallery(session, read_cub("data/"), seed=0)     # doctest: +SKIP
    >>> gallery.figure1.contrast                                         # doctest: +SKIP
    'This is a Fish Crow and not a American Crow because it has ...'
    """
    explainer = session.explainer
    names = [dataset.class_names[c] for c in dataset.class_ids]
    if names != list(explainer.class_names_):
        raise SaywhyError(f"the dataset's {len(names)} classes are not the {len(explainer.class_names_)} classes the "
                          "explainer was fitted on: pass the matching --explainer or --root")
    test = dataset.split(train=False)
    if not test:
        raise SaywhyError("no test images: the gallery shows the network on the dataset's test split")
    acts = session.activations(test, progress=progress, strict=False)
    kept = [test[i] for i in acts.index]
    if not kept:
        raise SaywhyError(f"none of the {len(test)} test images could be read")
    labels = np.array([dataset.class_index(r.class_id) for r in kept])
    order = _seeded_order(len(kept), n_samples, seed)
    pooled = acts.pooled[order]  # every array below is in seeded order
    records, labels = [kept[i] for i in order], labels[order]

    explanations = explainer.explain(pooled[:n_samples])
    samples = [Sample(str(r.path), r.image_id, explainer.readable_name(int(t)), e.class_name, e.class_index == int(t),
                      e.sentence, e.attributes) for r, t, e in zip(records, labels, explanations)]

    report = explain_failures(explainer, pooled, labels, [str(r.path) for r in records],
                              [r.image_id for r in records], None, k)
    figure1 = _figure1(session, records, pooled, labels, report.failures, k)
    shown = report.failures[:n_failures]
    if shown:
        involved = {f.true_index for f in shown} | {f.predicted_index for f in shown}
        train = [r for r in dataset.split(train=True) if dataset.class_index(r.class_id) in involved]
        paths = canonical_paths(session, dataset, train, progress)
        for failure in shown:
            failure.canonical_true = paths.get(failure.true_index)
            failure.canonical_predicted = paths.get(failure.predicted_index)
    return Gallery(seed, len(kept), samples, figure1, shown, report.n_failures, report.summary(),
                   {"unreadable test images": acts.n_unreadable})


def _figure1(session: Any, records: Sequence[ImageRecord], pooled: np.ndarray, labels: np.ndarray,
             failures: Sequence[Failure], k: int) -> Misclassified:
    """The first failure in seeded order, or else the test image whose top two logits are closest."""
    explainer = session.explainer
    logits = explainer.decision_function(pooled)
    if failures:
        row = next(i for i, r in enumerate(records) if str(r.path) == failures[0].path)
        predicted, other = failures[0].predicted_index, failures[0].true_index
        note = (f"The network takes this {explainer.readable_name(other)} for a "
                f"{explainer.readable_name(predicted)}.")
    else:
        if logits.shape[1] < 2:
            raise SaywhyError("Figure 1 needs at least two classes")
        top2 = np.sort(logits, axis=1)[:, -2:]
        row = int(np.argmin(top2[:, 1] - top2[:, 0]))  # first of the closest calls, in seeded order
        ranked = np.argsort(-logits[row], kind="stable")
        predicted, other = int(ranked[0]), int(ranked[1])
        note = (f"No test image is misclassified: shown instead is the test image with the smallest margin between "
                f"its top two classes, {explainer.readable_name(predicted)} and its runner-up "
                f"{explainer.readable_name(other)}.")
    contrast = explainer.contrast(pooled[row], predicted, other, k=k)
    record = records[row]
    maps = session.activations([record], keep_maps=True, strict=True).maps[0]
    size = open_image(record.path).size
    box = session.preprocess.seen_box(size, record.bbox)
    cams = [upsample_heatmap(normalize_heatmaps(class_activation_map(explainer.head_weights_[c], maps)), box, size)
            for c in (predicted, other)]
    return Misclassified(str(record.path), record.image_id, explainer.readable_name(int(labels[row])),
                         explainer.readable_name(predicted), explainer.readable_name(other), bool(failures), note,
                         float(logits[row, predicted] - logits[row, other]), contrast.explanation.sentence,
                         contrast.other.sentence, contrast.sentence, cams[0], cams[1])


# ----- drawing --------------------------------------------------------------------------------


# ----- Figure 5 for a class ---------------------------------------------------------------------
def class_filters(explainer: Any, pooled: np.ndarray, paths: Sequence[str], class_: str | int,
                  n_filters: int = 3, k: int = 5) -> list[dict[str, Any]]:
    """The filters that matter most for a class, each as the paper's Figure 5, from pooled activations.

    Filters are ranked by eq. 8's p(f|c) (the explainer's ``sigma_decision`` over the class's
    head weights); each comes with its top-``k`` attributes by p(t|f) (and the unnormalized
    p.d.f., eq. 1's bars) and the ``k`` rows of ``pooled`` (images ``paths``) that activate
    it most. Same data as :func:`saywhy.apps.grounding.filter_figure`, with the activations
    computed once by the caller for every class.

    >>> import scipy.sparse as sp
    >>> from saywhy.explain.explainer import Explainer
    >>> ex = Explainer().fit(np.eye(2), sp.csr_matrix(np.eye(2)), ["red crown", "blue wing"], np.eye(2), ["A", "B"])
    >>> figure = class_filters(ex, np.array([[0.2, 1.0], [3.0, 0.1]]), ["a.jpg", "b.jpg"], "B", n_filters=1, k=1)
    >>> figure[0]["filter"], figure[0]["images"][0]["path"]
    (1, 'a.jpg')
    """
    from saywhy.core.image_class import filter_given_class

    c = explainer.class_index(class_)
    pooled = np.atleast_2d(np.asarray(pooled, np.float64))
    if len(pooled) != len(paths):
        raise SaywhyError(f"{len(pooled)} activations for {len(paths)} images: must match")
    share = filter_given_class(explainer.head_weights_[[c]], explainer.config.sigma_decision)[0]  # eq. 8
    figures = []
    for f in np.argsort(-share, kind="stable")[:n_filters]:
        pdf = explainer.filter_attribute_pdf_[f]
        unnormalized = explainer.unnormalized_filter_pdf(int(f))
        top_images = np.argsort(-pooled[:, f], kind="stable")[:k] if len(pooled) else []
        figures.append({
            "filter": int(f), "share": float(share[f]),
            "attributes": [{"attribute": explainer.vocabulary_[j], "p": float(pdf[j]), "unnormalized": float(unnormalized[j])}
                           for j in np.argsort(-pdf, kind="stable")[:k]],
            "images": [{"path": str(paths[i]), "activation": float(pooled[i, f])} for i in top_images],
        })
    return figures
