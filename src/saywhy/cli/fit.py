"""``saywhy fit``: learn the filter-attribute p.d.f. (eq. 1-4) for a trained model and save the explainer.

Every option is checked when parsed, against :mod:`saywhy.explain.options` (which
imports nothing, so a typo fails before numpy, scipy or torch load). An option that the
chosen attribute model never reads is refused too.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.cli.common import add_command, add_device_options, float_in, int_at_least, network_device, note, progress, workspace
from saywhy.errors import SaywhyError

from saywhy.explain.options import (  # noqa: E402  (no imports: a typo fails at once)
    ATTRIBUTE_MODELS,
    CONTRASTS,
    FILTER_SCALES,
    GROUNDINGS,
    LIKELIHOODS,
    PRIORS,
    SENTENCES,
    SIGMA_ACTIVATIONS,
    SIGMAS,
)

CONFIG_OPTIONS = ("top_k", "sigma_activation", "top_fraction", "contrast", "filter_scale", "sigma_decision", "prior",
                  "likelihood", "min_df", "attribute_model", "evidence_l2", "class_weighting", "grounding", "sentence")


class ConfigDefaultsHelp(argparse.HelpFormatter):
    """Fills ``{default}`` in an option's help with ExplainerConfig's default, only when help is shown."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "{default}" in text:
            from saywhy.explain.explainer import ExplainerConfig

            text = text.replace("{default}", str(getattr(ExplainerConfig(), action.dest)))
        return text


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "fit", formatter_class=ConfigDefaultsHelp,
                    help="learn the filter-attribute p.d.f. (eq. 1-4) for a trained model")
    p.add_argument("--model", type=Path, required=True, help="checkpoint folder ('saywhy train' writes one)")
    p.add_argument("--root", type=Path, required=True, help="CUB-layout dataset folder")
    p.add_argument("--captions", type=Path, help="text_c10 folder if not beside the images")
    p.add_argument("--attributes", type=Path,
                   help="attributes instead of captions: a CSV/JSONL of image -> attributes, or 'cub' for CUB's 312 binary labels")
    p.add_argument("--out", type=Path, required=True, help="explainer folder to write")
    p.add_argument("--layer", help="final conv layer name (default: found automatically)")
    p.add_argument("--head", help="linear head name (default: found automatically)")
    add_device_options(p)
    add_config_options(p)


def add_config_options(p: argparse.ArgumentParser) -> None:
    def choice(*values: str) -> dict:
        return {"choices": values, "metavar": "{" + ",".join(values) + "}"}

    p.add_argument("--method", choices=["saywhy", "paper"], default="saywhy",
                   help="defaults for the options below: saywhy's measured best, or the paper's method")
    p.add_argument("--top-k", type=int_at_least(1), default=None, help="attributes per sentence (default {default})")
    p.add_argument("--sigma-activation", default=None, **choice(*SIGMA_ACTIVATIONS),
                   help="sigma of eq. 3 (default {default}; paper: l1)")
    p.add_argument("--top-fraction", type=float_in(0, 1, low_open=True, high_open=True), default=None,
                   help="with --sigma-activation top: share of images per filter, in (0, 1) (default {default})")
    p.add_argument("--contrast", default=None, **choice(*CONTRASTS), help="default {default}; paper: difference")
    p.add_argument("--filter-scale", default=None, **choice(*FILTER_SCALES), help="default {default}")
    p.add_argument("--sigma-decision", default=None, **choice(*SIGMAS), help="sigma of eq. 6 and 8 (default {default})")
    p.add_argument("--prior", default=None, **choice(*PRIORS), help="attribute prior of eq. 1 (default {default})")
    p.add_argument("--likelihood", default=None, **choice(*LIKELIHOODS), help="eq. 2-4: sum (paper) or mean (default {default})")
    p.add_argument("--min-df", type=int_at_least(1), default=None,
                   help="minimum number of caption files an attribute appears in (default {default})")
    p.add_argument("--attribute-model", default=None, **choice(*ATTRIBUTE_MODELS),
                   help="evidence (logistic model per attribute) or cooccurrence (the paper's p(t|f)) (default {default})")
    p.add_argument("--evidence-l2", type=float_in(0, low_open=True), default=None,
                   help="L2 penalty of the evidence model, above 0 (default {default})")
    p.add_argument("--no-class-weighting", dest="class_weighting", action="store_const", const=False, default=None,
                   help="evidence model: explain with p(t|x), the image alone, instead of weighing filters by p(f|x,c)")
    p.add_argument("--grounding", default=None, **choice(*GROUNDINGS),
                   help="eq. 9 weights with the evidence model: signed or positive (the attribute's own weights), or part "
                        "(the mean over attributes with the same noun) (default {default})")
    p.add_argument("--sentence", default=None, **choice(*SENTENCES),
                   help="natural (articles, plurals) or paper (the paper's template) (default {default})")


def config_from(args: argparse.Namespace):
    from saywhy.explain.explainer import ExplainerConfig

    given = {name: getattr(args, name) for name in CONFIG_OPTIONS if getattr(args, name) is not None}
    config = ExplainerConfig.paper(**given) if args.method == "paper" else ExplainerConfig(**given)
    unused = config.without_effect(given)
    if unused:
        flags = ", ".join("--" + name.replace("_", "-") for name in unused)
        raise SaywhyError(f"{flags} only apply to the evidence model, not to --attribute-model {config.attribute_model}: "
                          "drop them, or choose --attribute-model evidence")
    return config


def run(args: argparse.Namespace) -> None:
    from saywhy.data.attribute_files import (
        attach_attribute_file,
        attach_cub_binary_attributes,
        cub_attribute_files,
    )
    from saywhy.data.cub import read_cub
    from saywhy.model.checkpoint import checkpoint_preprocess, load_checkpoint
    from saywhy.model.feature_cache import FeatureCache
    from saywhy.pipeline import fit_explainer
    from saywhy.text.phrases import PhraseExtractor

    from saywhy.files import check_replaceable

    check_replaceable(args.out, "explainer")  # before minutes of work, not after
    ws = workspace(args)
    config = config_from(args)
    model, meta = load_checkpoint(args.model, map_location=network_device(args))
    dataset = read_cub(args.root, args.captions)
    source, extractor = "captions", None
    if args.attributes and str(args.attributes) == "cub":
        dataset, source = attach_cub_binary_attributes(dataset, *cub_attribute_files(dataset.root)), "attributes"
    elif args.attributes:
        dataset, source = attach_attribute_file(dataset, args.attributes), "attributes"
    else:
        extractor = PhraseExtractor(cache_dir=ws.phrase_cache, progress=progress(args))
    explainer, report = fit_explainer(dataset, model, checkpoint_preprocess(meta), config, source=source,
                                      extractor=extractor, layer=args.layer, head=args.head, progress=progress(args),
                                      feature_cache=FeatureCache(ws.feature_cache),
                                      metadata={"checkpoint": str(args.model.resolve()), "arch": meta["arch"]},
                                      model_classes=meta.get("classes"))
    explainer.save(args.out)
    ws.remember_explainer(args.out)
    for warning in report.warnings:
        note(f"warning: {warning}")
    skipped = ", ".join(f"{n} {k}" for k, n in report.skipped.items() if n) or "none"
    print(f"{args.out}: {report.vocabulary_size} attributes from {report.images_used} images (skipped: {skipped})")
