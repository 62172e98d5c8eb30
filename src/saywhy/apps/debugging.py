"""Network debugging (the paper's Figure 8): explain every misclassified image.

For each failure (predicted class != labelled class):

- the rationale for the predicted and for the true class: the explanation of the image
  with that class given (eq. 5-6), as ``Explainer.explain(pooled, [c])``;
- the attributes that separate them: ``Explainer.contrast(pooled, predicted, true)``;
  its ``favour`` list are the *misleading* attributes (evidence for the wrong class over
  the right one), its ``against`` list the *missed* ones (evidence for the true class);
- a canonical image of each class: the training image labelled with that class that has
  the largest logit for it, i.e. the network's most confident example of the class
  (labels flipped by noise rarely win this, unlike a nearest-to-the-mean rule, which a
  few mislabelled images pull towards other classes).

Over all failures: how often each attribute misled, how often each was missed, and the
most confused (true, predicted) class pairs.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from saywhy.data.records import Dataset, ImageRecord
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer

CANONICAL_RULE = "training image labelled with the class that has the largest logit for it"


@dataclass
class Failure:
    """One misclassified image, explained both ways."""

    image_id: int | None
    path: str
    true_class: str
    predicted_class: str
    true_index: int
    predicted_index: int
    logits: dict[str, float]  # "predicted" and "true" class logits
    predicted_rationale: dict[str, Any]  # Explanation.to_dict() for the predicted class
    true_rationale: dict[str, Any]  # Explanation.to_dict() for the true class
    contrast: str  # "This is a P and not a T because ..."
    misleading: list[tuple[str, float]]  # favour the predicted class over the true one
    missed: list[tuple[str, float]]  # favour the true class over the predicted one
    canonical_predicted: str | None = None  # image path
    canonical_true: str | None = None


@dataclass
class DebugReport:
    """Every failure of a network on a set of images, and what they have in common."""

    failures: list[Failure]
    n_images: int  # images classified (readable)
    n_correct: int
    misleading_attributes: list[tuple[str, int]]  # phrase, failures whose contrast lists it as misleading
    missed_attributes: list[tuple[str, int]]
    confused_pairs: list[dict[str, Any]]  # {"true", "predicted", "count"}, most frequent first
    canonical: dict[str, str | None] = field(default_factory=dict)  # class name -> image path
    canonical_rule: str = CANONICAL_RULE
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n_failures(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        """One line: how many failures among how many images."""
        if not self.failures:
            return f"no failures: all {self.n_images} images are classified as labelled"
        return (f"{self.n_failures} failure{'s' if self.n_failures != 1 else ''} among {self.n_images} images "
                f"(accuracy {self.n_correct / max(1, self.n_images):.1%})")

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "n_images": self.n_images, "n_correct": self.n_correct,
                "n_failures": self.n_failures, "misleading_attributes": self.misleading_attributes,
                "missed_attributes": self.missed_attributes, "confused_pairs": self.confused_pairs,
                "canonical": self.canonical, "canonical_rule": self.canonical_rule, "skipped": self.skipped,
                "failures": [asdict(f) for f in self.failures]}


def canonical_rows(explainer: Explainer, pooled: np.ndarray, labels: Sequence[int]) -> dict[int, int]:
    """Per class index, the row (of ``pooled``) labelled with it that has the largest logit for it.

    Classes without a labelled row are left out. Ties go to the first row.

    >>> import scipy.sparse as sp
    >>> ex = Explainer().fit(np.eye(2), sp.csr_matrix(np.eye(2)), ["a b", "c d"], np.eye(2), ["A", "B"])
    >>> canonical_rows(ex, np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]), [0, 0, 1])
    {0: 1, 1: 2}
    """
    pooled = np.atleast_2d(np.asarray(pooled, np.float64))
    labels = np.asarray(labels)
    logits = explainer.decision_function(pooled)
    rows = {}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rows[int(c)] = int(members[np.argmax(logits[members, c])])
    return rows


def explain_failures(explainer: Explainer, pooled: np.ndarray, true_classes: Sequence[int], paths: Sequence[str],
                     image_ids: Sequence[int | None] | None = None, canonical: dict[int, str] | None = None,
                     k: int = 3) -> DebugReport:
    """The debug report from arrays: pooled activations and labels of the images, in the same order.

    ``canonical`` maps a class index to its canonical image path (see :func:`canonical_rows`);
    ``k`` is the number of separating attributes per side of each contrast.
    """
    pooled = np.atleast_2d(np.asarray(pooled, np.float64))
    true_classes = np.asarray(true_classes, dtype=np.int64)
    if not len(pooled) == len(true_classes) == len(paths):
        raise SaywhyError(f"{len(pooled)} activations, {len(true_classes)} labels, {len(paths)} paths: must match")
    image_ids = list(image_ids) if image_ids is not None else [None] * len(paths)
    canonical = canonical or {}
    predicted = explainer.predict(pooled)
    logits = explainer.decision_function(pooled)
    failures, misleading, missed, pairs = [], Counter(), Counter(), Counter()
    for row in np.flatnonzero(predicted != true_classes):
        p, t = int(predicted[row]), int(true_classes[row])
        contrast = explainer.contrast(pooled[row], p, t, k=k)
        failures.append(Failure(
            image_id=image_ids[row], path=str(paths[row]),
            true_class=explainer.readable_name(t), predicted_class=explainer.readable_name(p),
            true_index=t, predicted_index=p,
            logits={"predicted": float(logits[row, p]), "true": float(logits[row, t])},
            predicted_rationale=contrast.explanation.to_dict(), true_rationale=contrast.other.to_dict(),
            contrast=contrast.sentence, misleading=contrast.favour, missed=contrast.against,
            canonical_predicted=canonical.get(p), canonical_true=canonical.get(t),
        ))
        misleading.update(phrase for phrase, _ in contrast.favour)
        missed.update(phrase for phrase, _ in contrast.against)
        pairs[(t, p)] += 1
    confused = [{"true": explainer.readable_name(t), "predicted": explainer.readable_name(p), "count": n}
                for (t, p), n in _by_count(pairs)]
    involved = sorted({f.true_index for f in failures} | {f.predicted_index for f in failures})
    return DebugReport(failures, len(pooled), len(pooled) - len(failures), _by_count(misleading),
                       _by_count(missed), confused, {explainer.readable_name(c): canonical.get(c) for c in involved})


def _by_count(counter: Counter) -> list:
    """Items most frequent first, ties by key."""
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))


def debug_network(session: Any, dataset: Dataset, records: Sequence[ImageRecord] | None = None, k: int = 3,
                  canonical: bool = True, progress: bool = False) -> DebugReport:
    """Classify ``records`` (default: the test split), and explain every failure.

    ``session`` is a :class:`saywhy.pipeline.ExplainerSession`; the dataset's classes must
    be the explainer's. Unreadable images are skipped and counted. With ``canonical``,
    the training split is run too, to pick each involved class's canonical image.
    """
    explainer = session.explainer
    names = [dataset.class_names[c] for c in dataset.class_ids]
    if names != list(explainer.class_names_):
        raise SaywhyError(f"the dataset's {len(names)} classes are not the {len(explainer.class_names_)} classes the "
                          "explainer was fitted on: pass the matching --explainer or dataset")
    records = list(dataset.split(train=False) if records is None else records)
    if not records:
        raise SaywhyError("no images to debug: the dataset has no test images")
    acts = session.activations(records, progress=progress, strict=False)
    kept = [records[i] for i in acts.index]
    labels = [dataset.class_index(r.class_id) for r in kept]
    report = explain_failures(explainer, acts.pooled, labels, [str(r.path) for r in kept],
                              [r.image_id for r in kept], None, k)
    report.skipped = {"unreadable images": acts.n_unreadable}
    if canonical and report.failures:
        involved = {f.true_index for f in report.failures} | {f.predicted_index for f in report.failures}
        train = [r for r in dataset.split(train=True) if dataset.class_index(r.class_id) in involved]
        paths = canonical_paths(session, dataset, train, progress)
        for failure in report.failures:
            failure.canonical_true = paths.get(failure.true_index)
            failure.canonical_predicted = paths.get(failure.predicted_index)
        report.canonical = {explainer.readable_name(c): paths.get(c) for c in sorted(involved)}
    return report


def canonical_paths(session: Any, dataset: Dataset, records: Sequence[ImageRecord], progress: bool = False) -> dict[int, str]:
    """Per class index, the path of the canonical image among ``records`` (see :func:`canonical_rows`)."""
    if not records:
        return {}
    acts = session.activations(list(records), progress=progress, strict=False)
    kept = [records[i] for i in acts.index]
    rows = canonical_rows(session.explainer, acts.pooled, [dataset.class_index(r.class_id) for r in kept])
    return {c: str(kept[row].path) for c, row in rows.items()}
