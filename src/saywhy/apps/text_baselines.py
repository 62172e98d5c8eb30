"""Explanations that never look at the image: the yardsticks an image explanation must beat.

- ``class caption frequency``: for the predicted class, the share of its training images
  whose captions name each attribute; the top-k make the sentence and the ranking. It
  knows the class and the captions, nothing about this image.
- ``fixed sentence``: the k attributes found in most training images, for every image.
- ``own captions``: the k attributes most frequent in the image's *own* captions. It
  sees the references it is scored against, so it is an upper reference, not a method.

All three are written with the explainer's own sentence style, so a comparison measures
the attributes chosen, not the wording.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from saywhy.errors import SaywhyError


def class_attribute_frequency(documents: Sequence[Sequence[str]], labels: Sequence[int], vocabulary: Sequence[str],
                              n_classes: int) -> np.ndarray:
    """(classes x attributes): share of each class's images whose documents name the attribute.

    >>> class_attribute_frequency([["red crown"], ["red crown", "long tail"], ["long tail"]], [0, 0, 1],
    ...                           ["red crown", "long tail"], 2).tolist()
    [[1.0, 0.5], [0.0, 1.0]]
    """
    if len(documents) != len(labels):
        raise SaywhyError(f"{len(documents)} documents for {len(labels)} labels")
    index = {t: j for j, t in enumerate(vocabulary)}
    counts = np.zeros((n_classes, len(vocabulary)))
    images = np.zeros(n_classes)
    for document, label in zip(documents, labels):
        images[label] += 1
        for term in set(document):
            if term in index:
                counts[label, index[term]] += 1
    return np.divide(counts, images[:, None], out=np.zeros_like(counts), where=images[:, None] > 0)


def top_attributes(scores: np.ndarray, vocabulary: Sequence[str], k: int) -> list[list[str]]:
    """Each row's k best attributes, ties in vocabulary order (as explanations break them)."""
    order = np.argsort(-np.atleast_2d(scores), axis=1, kind="stable")[:, :k]
    return [[vocabulary[j] for j in row] for row in order]


def fixed_attributes(documents: Sequence[Sequence[str]], k: int) -> list[str]:
    """The k attributes in most documents, ties alphabetical.

    >>> fixed_attributes([["red crown", "long tail"], ["long tail"]], 1)
    ['long tail']
    """
    frequency = Counter(t for d in documents for t in set(d))
    return [t for t, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def own_attributes(document: Sequence[str], k: int) -> list[str]:
    """The k attributes most often in one image's own captions, ties alphabetical."""
    return [t for t, _ in sorted(Counter(document).items(), key=lambda kv: (-kv[1], kv[0]))[:k]]
