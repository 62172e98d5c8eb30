"""The library in three calls: ``saywhy.fit``, ``saywhy.load``, and the session they return.

>>> session = saywhy.fit(model, "CUB_200_2011", arch="torchvision:resnet18", out="exp")  # doctest: +SKIP
>>> session(images, target=None)[0].sentence                                              # doctest: +SKIP
'This is a Carolina Wren, a small brown bird, because it has a white eyebrow ...'
>>> saywhy.load("exp").ground("bird.jpg", ["white eyebrow"]).image.shape                  # doctest: +SKIP
(1, 375, 500)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from saywhy.errors import SaywhyError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fit(model: Any, dataset: Any, *, preprocess: Any = None, arch: str | None = None,
        arch_kwargs: dict[str, Any] | None = None, out: str | Path | None = None,
        config: Any = None, captions: str | Path | None = None, attributes: str | Path | None = None,
        home: str | Path | None = None, progress: bool = False, **settings: Any):
    """Build an explainer for a live ``nn.Module`` and return the session that explains with it.

    ``dataset``: a CUB-layout folder (``images.txt``, ``classes.txt``, ..., captions in
    ``text_c10`` beside it or at ``captions``) or a :class:`~saywhy.data.records.Dataset`.
    ``preprocess``: a :class:`~saywhy.data.images.Preprocess` (the default is 224 px with
    ImageNet normalization). ``settings`` are :class:`~saywhy.explain.explainer.ExplainerConfig`
    fields (``top_k=3``, ``attribute_model="cooccurrence"``...), or pass ``config``.
    ``attributes``: a CSV/JSONL of image -> attributes instead of captions.
    With ``out``, the explainer is saved there; with ``arch`` too ("torchvision:resnet18",
    "timm:NAME", "saywhy:smallcnn", with ``arch_kwargs`` for its constructor), so is the
    network (``OUT.checkpoint`` beside it, written first), and the command line can then use the explainer
    (``saywhy explain --explainer out``). A network that is not global average pooling +
    one linear layer is refused with the layers that were tried.
    """
    from saywhy.data.attribute_files import attach_attribute_file
    from saywhy.data.cub import read_cub
    from saywhy.data.images import Preprocess
    from saywhy.data.records import Dataset
    from saywhy.explain.explainer import ExplainerConfig
    from saywhy.pipeline import ExplainerSession, fit_explainer
    from saywhy.text.phrases import PhraseExtractor
    from saywhy.workspace import Workspace

    if config is not None and settings:
        raise SaywhyError("give either config= or settings by name, not both")
    config = config or ExplainerConfig(**settings)
    preprocess = preprocess or Preprocess(image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if not isinstance(preprocess, Preprocess):
        raise SaywhyError("fit needs a saywhy.Preprocess (size, mean, std, crop) so that the explainer can "
                          "preprocess new images the same way; a torchvision transform can be used when explaining")
    if not isinstance(dataset, Dataset):
        dataset = read_cub(dataset, captions)
    source, extractor = "captions", None
    workspace = Workspace(home) if home else Workspace.default()
    if attributes is not None:
        dataset, source = attach_attribute_file(dataset, attributes), "attributes"
    else:
        extractor = PhraseExtractor(cache_dir=workspace.phrase_cache, progress=progress)
    model.eval()
    metadata: dict[str, Any] = {"arch": arch} if arch else {}
    out = None if out is None else Path(out)
    checkpoint = None if out is None or arch is None else checkpoint_beside(out)
    if out is not None:
        from saywhy.files import check_replaceable

        check_replaceable(out, "explainer")
        if checkpoint is not None:
            check_replaceable(checkpoint, "checkpoint")
    if checkpoint is not None:
        metadata["checkpoint"] = str(checkpoint)
    explainer, report = fit_explainer(dataset, model, preprocess, config, source=source, extractor=extractor,
                                      metadata=metadata, progress=progress)
    if out is not None:
        if checkpoint is not None:  # first: an explainer is never saved naming a network that is not there
            from saywhy.model.checkpoint import import_checkpoint

            import_checkpoint(checkpoint, arch=arch, model=model, classes=explainer.class_names_, preprocess=preprocess,
                              arch_kwargs=arch_kwargs)
        explainer.save(out)
        if checkpoint is None:
            log.warning("no arch= given: the network was not saved with the explainer, so the command line "
                        "needs --model CHECKPOINT to use it")
        workspace.remember_explainer(out)
    session = ExplainerSession(explainer, model, preprocess)
    session.fit_report = report
    return session


def checkpoint_beside(out: Path) -> Path:
    """Where ``fit(out=...)`` keeps the network: beside the explainer folder, never inside it
    (saving an explainer replaces its whole folder).

    >>> checkpoint_beside(Path("runs/exp")).as_posix().endswith("runs/exp.checkpoint")
    True
    """
    return out.resolve().with_name(out.resolve().name + ".checkpoint")


def load(explainer: str | Path, model: Any = None, *, preprocess: Any = None, home: str | Path | None = None):
    """A saved explainer with its network (the checkpoint it names, or ``model``), ready to explain.

    ``preprocess`` may be a torchvision transform for inputs the saved preprocessing does
    not describe; tensors given to the session are always used as they are.
    """
    from saywhy.explain.explainer import Explainer
    from saywhy.model.feature_cache import FeatureCache
    from saywhy.pipeline import ExplainerSession
    from saywhy.workspace import Workspace

    fitted = Explainer.load(explainer)
    cache = FeatureCache((Workspace(home) if home else Workspace.default()).feature_cache)
    if model is None:
        return ExplainerSession.from_checkpoint(fitted, preprocess=preprocess, feature_cache=cache,
                                                advice="pass the model, saywhy.load(folder, model)")
    return ExplainerSession(fitted, model.eval(), preprocess, feature_cache=cache)
