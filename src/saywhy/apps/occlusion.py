"""Image-specificity proven with keypoints: occluding the named part, and citing hidden parts.

:func:`occlusion_test`: for each cited attribute whose part has a visible keypoint, the
network sees the image twice more, once with a square of side 0.2 x max(box width, box
height) greyed out around that keypoint and once around another visible part's keypoint
(seeded choice among parts whose square cannot cover the attribute's own keypoints). The
square is filled with the preprocessing mean (0 after normalization) on the network's
input, so it is the same grey whatever the crop and resize. The score is the one
explanations show (``Explainer.readable_scores``: the calibrated p(t|x) with the evidence
model, p(t|x,c) with the paper's p(t|f), for the class the explanation was for), read
in log-odds; a drop is its value on the image minus its value on the occluded copy. The same
figures for the score explanations are ranked by (the class-weighted log-odds of eq. 5-6, or
log p(t|x,c) with p(t|f)) come under ``ranking_score``. With visibility gating (part maps and
``part_visibility``) both include the part's visibility, as the explanations do: the shown score
is multiplied by it, the ranking adds its log.
Each occluded image is one row of a batched forward pass through the session.

:func:`invisible_parts`: for lists of cited attributes per image (the method's
explanations, and the baselines that never look at the image), the share whose part is
annotated invisible in the image (:mod:`saywhy.metrics.visibility`).
"""
from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from saywhy.data.records import ImageRecord, Keypoint
from saywhy.metrics.occlusion import SIDE_FRACTION, OcclusionResult, occlusion_rectangle
from saywhy.metrics.pck import PartMap, attribute_parts, load_attribute_parts, object_size
from saywhy.metrics.visibility import invisible_share
from saywhy.pipeline import ExplainerSession

LOGIT_CLIP = 1e-12  # scores are clipped to [1e-12, 1 - 1e-12] before log-odds, so they stay finite


def invisible_parts(records: Sequence[ImageRecord], cited: Mapping[str, Sequence[Sequence[str]]],
                    part_map: PartMap | None = None) -> dict[str, dict]:
    """Per citer (method or baseline), the share of its cited part-attributes whose part is hidden.

    ``cited[name][i]`` lists the attributes ``name`` cites for ``records[i]``.
    """
    part_map = load_attribute_parts() if part_map is None else part_map
    return {name: invisible_share(zip(lists, (r.keypoints for r in records)), part_map).to_dict()
            for name, lists in cited.items()}


def _visible(keypoints: Mapping[str, Keypoint], parts: Sequence[str]) -> list[tuple[float, float]]:
    return [(keypoints[p].x, keypoints[p].y) for p in parts if p in keypoints and keypoints[p].visible]


def occlusion_points(record: ImageRecord, attribute: str, part_map: PartMap, seed: int
                     ) -> tuple[tuple[float, float], tuple[float, float]] | str:
    """The own-part and other-part keypoints to occlude for one cited attribute, or why there are none.

    Seeded by ``seed``, the image id and the attribute, so every citer of the same attribute
    on the same image gets the same pair. The other part is a visible keypoint of a part the
    attribute does not name, farther than one square side from each own keypoint.
    """
    parts = attribute_parts(attribute, part_map)
    if not parts:
        return "noun names no part"
    if record.bbox is None or object_size(record.bbox) <= 0:
        return "image has no bounding box"
    own = _visible(record.keypoints, parts)
    if not own:
        return "part not visible"
    side = SIDE_FRACTION * object_size(record.bbox)
    others = [xy for name, k in sorted(record.keypoints.items()) if name not in parts and k.visible
              for xy in [(k.x, k.y)] if min(np.hypot(xy[0] - o[0], xy[1] - o[1]) for o in own) > side]
    if not others:
        return "no other visible part away from it"
    rng = np.random.default_rng([seed, int(record.image_id), zlib.crc32(attribute.encode())])
    return own[int(rng.integers(len(own)))], others[int(rng.integers(len(others)))]


def occlusion_sample(records: Sequence[ImageRecord], n_images: int, seed: int = 0) -> list[int]:
    """A seeded sample of the positions of records with keypoints and a box, in order."""
    pool = [i for i, r in enumerate(records) if r.keypoints and r.bbox is not None]
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(pool, min(n_images, len(pool)), replace=False).tolist()) if pool else []


def _log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def occlusion_test(session: ExplainerSession, records: Sequence[ImageRecord], cited: Mapping[str, Sequence[Sequence[str]]],
                   classes: Sequence[int], part_map: PartMap | None = None, seed: int = 0,
                   batch_size: int = 64) -> dict[str, dict]:
    """Per citer, how often occluding the cited attribute's own part lowers its score more than another part.

    ``cited[name][i]``: the attributes ``name`` cites for ``records[i]``; ``classes[i]``: the
    class the scores are read for (the explanation's). Every (image, attribute) case is run
    once whichever citers share it; the original images are run through the same tensor path
    so that a drop measures the square alone.
    """
    import torch

    from saywhy.data.images import ImageDataset, Preprocess

    part_map = load_attribute_parts() if part_map is None else part_map
    preprocess = session.preprocess
    if not isinstance(preprocess, Preprocess):
        return {name: {"skipped": {"the session's preprocessing is not saywhy's Preprocess": 1}} for name in cited}
    vocabulary = {t: j for j, t in enumerate(session.explainer.vocabulary_)}
    cases: dict[tuple[int, str], tuple] = {}
    skipped: dict[str, Counter] = {name: Counter() for name in cited}
    for name, lists in cited.items():
        for i, attributes in enumerate(lists):
            for attribute in dict.fromkeys(attributes):
                if attribute not in vocabulary:
                    skipped[name]["attribute outside the vocabulary"] += 1
                    continue
                key = (i, attribute)
                if key not in cases:
                    cases[key] = occlusion_points(records[i], attribute, part_map, seed)
                if isinstance(cases[key], str):
                    skipped[name][cases[key]] += 1
    wanted = [(i, t) for (i, t), points in cases.items() if not isinstance(points, str)]
    by_image: dict[int, list[str]] = {}
    for i, attribute in wanted:
        by_image.setdefault(i, []).append(attribute)
    images = sorted(by_image)
    inputs = ImageDataset([records[i] for i in images], preprocess)
    size = preprocess.image_size
    tensors, rows, unreadable = [], {}, set()
    for position, i in enumerate(images):
        tensor, _, ok = inputs[position]
        if not ok:
            unreadable.add(i)
            continue
        record = records[i]
        with Image.open(record.path) as image:  # the header only
            seen = preprocess.seen_box(image.size, record.bbox)
        rows[(i, None)] = len(tensors)
        tensors.append(tensor)
        side = SIDE_FRACTION * object_size(record.bbox)
        for attribute in by_image[i]:
            for which, point in zip(("own", "other"), cases[(i, attribute)]):
                r0, r1, c0, c1 = occlusion_rectangle(point, side, seen, size)
                occluded = tensor.clone()
                occluded[:, r0:r1, c0:c1] = 0.0  # (mean - mean) / std: the preprocessing mean
                rows[(i, attribute, which)] = len(tensors)
                tensors.append(occluded)
    pooled = []
    with torch.no_grad():
        for start in range(0, len(tensors), batch_size):
            pooled.append(session.activations(tensors[start:start + batch_size]).pooled)
    pooled = np.concatenate(pooled) if pooled else np.zeros((0, session.explainer.n_filters_))
    row_class = np.zeros(len(tensors), int)
    for key, row in rows.items():
        row_class[row] = int(classes[key[0]])
    scores = _log_odds(session.explainer.readable_scores(pooled, row_class)) if len(pooled) else np.zeros((0, 0))
    ranking = _ranking_scores(session.explainer, pooled, row_class)
    out = {}
    for name, lists in cited.items():
        result, ranked = OcclusionResult(), OcclusionResult()
        for i, attributes in enumerate(lists):
            for attribute in dict.fromkeys(attributes):
                if (i, attribute, "own") not in rows:
                    if i in unreadable:
                        skipped[name]["unreadable image"] += 1
                    continue
                j = vocabulary[attribute]
                base = scores[rows[(i, None)], j]
                result.add(base - scores[rows[(i, attribute, "own")], j], base - scores[rows[(i, attribute, "other")], j])
                base = ranking[rows[(i, None)], j]
                ranked.add(base - ranking[rows[(i, attribute, "own")], j], base - ranking[rows[(i, attribute, "other")], j])
        result.skipped = dict(skipped[name])
        out[name] = {**result.to_dict(), "ranking_score": {k: v for k, v in ranked.to_dict().items() if k != "skipped"}}
    return out


def _ranking_scores(explainer, pooled: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The score explanations are ranked by, for the same classes: the evidence model's class-weighted
    log-odds (eq. 5 with eq. 6's weights), or log p(t|x,c) for the paper's p(t|f)."""
    if not len(pooled):
        return np.zeros((0, 0))
    scores = explainer.scores(pooled, classes)
    ranked = np.asarray(scores.evidence if scores.evidence is not None else scores.log_p, np.float64)
    if explainer.gates_visibility:  # explanations rank by the score times the part's visibility
        ranked = ranked + np.log(np.maximum(explainer.attribute_visibility(pooled), 1e-12))
    return ranked
