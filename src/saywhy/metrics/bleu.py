"""Sentence BLEU of explanations against the image's captions (the paper's Table 3).

Each explanation sentence is scored with sacrebleu's sentence-level BLEU, the image's
ground-truth captions as its references (all of them, multi-reference BLEU). Settings,
fixed so numbers are comparable across runs (``bleu_signature`` prints sacrebleu's own):

- ``lowercase=True`` (captions are lower case, explanations are not), ``tokenize="13a"``
  (sacrebleu's default, the mteval-v13a tokenizer);
- ``smooth_method="exp"`` (sacrebleu's default for sentence BLEU), ``effective_order=True``
  (a sentence shorter than n words is not scored 0 for lacking n-grams);
- BLEU-n is *cumulative*: the brevity penalty times the geometric mean of the 1..n-gram
  precisions with equal weights 1/n (sacrebleu's ``max_ngram_order=n``), as NLTK's
  ``weights=(1/n,) * n``; BLEU-4 is the usual BLEU.

Scale: [0, 1] like the paper (sacrebleu's 0-100 divided by 100, clipped at 1 against
floating-point round-off). Images without captions have no references: they are skipped
and counted, never scored 0.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from saywhy.errors import SaywhyError

ORDERS = (1, 2, 3, 4)
SMOOTHING = "exp"


@cache
def _bleu(order: int, smoothing: str):
    from sacrebleu.metrics import BLEU

    if not 1 <= order <= 4:
        raise SaywhyError(f"BLEU order must be 1..4, got {order}")
    return BLEU(lowercase=True, tokenize="13a", smooth_method=smoothing, effective_order=True, max_ngram_order=order)


def bleu_signature(order: int = 4, smoothing: str = SMOOTHING) -> str:
    """sacrebleu's signature of the settings used, without its reference count (that varies per image).

    >>> bleu_signature(2).startswith("case:lc|eff:yes|tok:13a|smooth:exp")
    True
    """
    from sacrebleu.metrics import BLEU

    probe = BLEU(lowercase=True, tokenize="13a", smooth_method=smoothing, effective_order=True, max_ngram_order=order)
    probe.sentence_score("a", ["a"])  # sacrebleu only signs a metric that has scored something
    return "|".join(part for part in str(probe.get_signature()).split("|") if not part.startswith("nrefs:"))


def sentence_bleu(hypothesis: str, references: Sequence[str], order: int = 4, smoothing: str = SMOOTHING) -> float:
    """Cumulative BLEU-``order`` of one sentence against its references, in [0, 1].

    >>> sentence_bleu("This bird has a red crown.", ["this bird has a red crown ."])
    1.0
    >>> round(sentence_bleu("a red crown", ["a blue wing"], order=1), 4)  # 1 of 3 words match, same length
    0.3333
    """
    if isinstance(references, str):
        references = [references]
    references = [r for r in references if r and r.strip()]
    if not references:
        raise SaywhyError("BLEU needs at least one non-empty reference caption")
    return min(_bleu(order, smoothing).sentence_score(hypothesis, list(references)).score / 100.0, 1.0)


@dataclass
class BleuTable:
    """Mean sentence BLEU-1..4 for correctly classified, misclassified and all scored images (Table 3)."""

    means: dict[str, dict[str, float | None]]  # group -> "BLEU-n" -> mean (None if the group is empty)
    counts: dict[str, int]  # images per group
    skipped: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"means": self.means, "counts": self.counts, "skipped": self.skipped, "settings": self.settings}


def bleu_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]], orders: Sequence[int] = ORDERS,
                smoothing: str = SMOOTHING) -> np.ndarray:
    """Sentence BLEU of each hypothesis, one column per order (images x orders)."""
    if len(hypotheses) != len(references):
        raise SaywhyError(f"{len(hypotheses)} sentences but {len(references)} reference sets")
    return np.array([[sentence_bleu(h, refs, n, smoothing) for n in orders] for h, refs in zip(hypotheses, references)],
                    dtype=np.float64).reshape(len(hypotheses), len(orders))


def bleu_by_correctness(hypotheses: Sequence[str], references: Sequence[Sequence[str] | None], correct: Sequence[bool],
                        orders: Sequence[int] = ORDERS, smoothing: str = SMOOTHING) -> BleuTable:
    """Table 3: mean sentence BLEU for correct, wrong and all images; images without captions skipped.

    >>> t = bleu_by_correctness(["a red crown", "a red crown", "x"], [["a red crown"], ["a blue wing"], None],
    ...                         [True, False, True], orders=[1])
    >>> [round(t.means[g]["BLEU-1"], 4) for g in ("correct", "wrong", "overall")], t.skipped
    ([1.0, 0.3333, 0.6667], {'images without captions': 1})
    """
    if not len(hypotheses) == len(references) == len(correct):
        raise SaywhyError(f"lengths differ: {len(hypotheses)} sentences, {len(references)} reference sets, "
                          f"{len(correct)} correctness flags")
    has_refs = [refs is not None and any(r.strip() for r in refs) for refs in references]
    kept = [i for i, ok in enumerate(has_refs) if ok]
    scores = bleu_scores([hypotheses[i] for i in kept], [references[i] for i in kept], orders, smoothing)
    right = np.array([bool(correct[i]) for i in kept], dtype=bool)
    groups = {"correct": right, "wrong": ~right, "overall": np.ones(len(kept), dtype=bool)}
    means = {g: {f"BLEU-{n}": (float(scores[mask, j].mean()) if mask.any() else None)
                 for j, n in enumerate(orders)} for g, mask in groups.items()}
    settings = {"lowercase": True, "tokenize": "13a", "smooth_method": smoothing, "effective_order": True,
                "bleu_n": "cumulative, equal weights 1/n over 1..n-grams", "scale": "[0, 1]",
                "references": "all captions of the image"}
    return BleuTable(means, {g: int(m.sum()) for g, m in groups.items()},
                     {"images without captions": len(hypotheses) - len(kept)}, settings)
