"""``saywhy fit``: learn the filter-attribute p.d.f. (eq. 1-4) for a trained model and save the explainer.

Every option is checked when parsed, against :mod:`saywhy.explain.options` (which
imports nothing, so a typo fails before numpy, scipy or torch load). An option that the
chosen attribute model never reads is refused too.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.cli.common import (
    add_command,
    add_device_options,
    add_strict_option,
    float_in,
    int_at_least,
    network_device,
    note,
    progress,
    skip_summary,
    strict_check,
    workspace,
)
from saywhy.errors import SaywhyError

from saywhy.explain.options import (  # noqa: E402  (no imports: a typo fails at once)
    ATTRIBUTE_MODELS,
    CONTRASTS,
    EVIDENCE_POOLINGS,
    FILTER_SCALES,
    GROUNDINGS,
    LIKELIHOODS,
    PART_GROUNDINGS,
    PRIORS,
    SENTENCES,
    SIGMA_ACTIVATIONS,
    RETRIEVAL_SCORES,
    SIGMAS,
    VISIBILITY_SOURCES,
)

CONFIG_OPTIONS = ("top_k", "sigma_activation", "top_fraction", "contrast", "filter_scale", "sigma_decision", "prior",
                  "likelihood", "min_df", "attribute_model", "evidence_l2", "class_weighting", "grounding", "sentence",
                  "part_visibility", "part_grounding", "evidence_pooling", "visibility_threshold",
                  "visibility_source", "evidence_smoothing", "retrieval_score", "located_evidence")


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
    p.add_argument("--root", type=Path, help="CUB-layout dataset folder (not with --from-shards)")
    p.add_argument("--captions", type=Path, help="text_c10 folder if not beside the images")
    p.add_argument("--attributes", type=Path,
                   help="attributes instead of captions: a CSV/JSONL of image -> attributes, or 'cub' for CUB's 312 binary labels")
    p.add_argument("--out", type=Path, required=True, help="explainer folder to write")
    p.add_argument("--layer", help="final conv layer name (default: found automatically)")
    p.add_argument("--head", help="linear head name (default: found automatically)")
    p.add_argument("--synonyms", type=Path, metavar="FILE",
                   help="synonym groups to merge instead of those learned from the captions: one group per line, "
                        "words separated by commas, the first one written ('beak, bill'); an empty file merges none")
    add_strict_option(p)
    p.add_argument("--from-shards", type=Path, nargs="+", metavar="SHARD",
                   help="fit from the N folders 'saywhy extract --shard K/N' wrote, instead of --root")
    p.add_argument("--distributed", action="store_true",
                   help="one fit across the processes torchrun starts (automatic when WORLD_SIZE > 1); rank 0 writes")
    p.add_argument("--no-part-maps", dest="part_maps", action="store_false",
                   help="do not learn part maps from the training images' keypoints (learned when they have any)")
    p.add_argument("--attribute-parts", type=Path, metavar="FILE",
                   help="noun -> part names JSON ({\"parts\": {\"beak\": [\"beak\"], ...}}) for the part maps "
                        "(default: saywhy's map for CUB's parts)")
    add_device_options(p)
    add_config_options(p)


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The options saying which dataset and network a fit (or an extraction) reads."""
    p.add_argument("--model", type=Path, required=True, help="checkpoint folder ('saywhy train' writes one)")
    p.add_argument("--root", type=Path, required=True, help="CUB-layout dataset folder")
    p.add_argument("--captions", type=Path, help="text_c10 folder if not beside the images")
    p.add_argument("--attributes", type=Path,
                   help="attributes instead of captions: a CSV/JSONL of image -> attributes, or 'cub' for CUB's 312 binary labels")
    p.add_argument("--layer", help="final conv layer name (default: found automatically)")
    p.add_argument("--head", help="linear head name (default: found automatically)")


def fit_data(args: argparse.Namespace, ws):
    """(dataset, source, extractor) for --root with --captions or --attributes."""
    from saywhy.data.attribute_files import (
        attach_attribute_file,
        attach_cub_binary_attributes,
        cub_attribute_files,
    )
    from saywhy.data.cub import read_cub
    from saywhy.text.phrases import PhraseExtractor

    dataset = read_cub(args.root, args.captions)
    source, extractor = "captions", None
    if args.attributes and str(args.attributes) == "cub":
        dataset, source = attach_cub_binary_attributes(dataset, *cub_attribute_files(dataset.root)), "attributes"
    elif args.attributes:
        dataset, source = attach_attribute_file(dataset, args.attributes), "attributes"
    else:
        extractor = PhraseExtractor(cache_dir=ws.phrase_cache, progress=progress(args))
    return dataset, source, extractor


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
    p.add_argument("--part-visibility", action=argparse.BooleanOptionalAction, default=None,
                   help="with part maps: multiply a part-attribute's score by the probability that its part shows "
                        "(default {default})")
    p.add_argument("--located-evidence", action=argparse.BooleanOptionalAction, default=None,
                   help="with part-pooled evidence: cite a part-attribute only where the evidence read at its part "
                        "exceeds that of the class's mean training image (default {default})")
    p.add_argument("--part-grounding", default=None, **choice(*PART_GROUNDINGS),
                   help="with part maps: heatmaps of part-attributes from eq. 9 (none), the part's learned map (maps), "
                        "or both (maps_alpha) (default {default})")
    p.add_argument("--evidence-pooling", default=None, **choice(*EVIDENCE_POOLINGS),
                   help="evidence model: read a part-attribute from the maps' global mean (global) or pooled under its "
                        "part's learned location map (part), or both side by side (both); part and both need part "
                        "maps, and the maps of an image the first time it is explained (the feature cache keeps the rest); "
                        "auto is both where this fit learns part maps (training keypoints, one process), else global "
                        "(default {default})")
    p.add_argument("--visibility-threshold", type=float_in(0, 1, high_open=True), default=None,
                   help="with part maps: do not cite a part-attribute whose part shows with a probability below this, "
                        "in [0, 1); 0 is off (default {default})")
    p.add_argument("--visibility-source", default=None, **choice(*VISIBILITY_SOURCES),
                   help="with part maps: read whether a part shows from a logistic model on the maps' mean (pooled) "
                        "or from the peak of the part's learned location map (peak); peak needs a forward pass with "
                        "the maps of an image the first time it is explained (default {default})")
    p.add_argument("--evidence-smoothing", type=float_in(0, 1, high_open=True), default=None,
                   help="evidence model: draw each fitting image's caption targets by this share, in [0, 1), toward "
                        "the caption frequencies of its predicted class (default {default})")
    p.add_argument("--retrieval-score", default=None, **choice(*RETRIEVAL_SCORES),
                   help="what retrieval and search rank images by: eq. 5's p(t|x, c) (class) or the score the "
                        "explanations show (image) (default {default})")


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
    from saywhy.model.checkpoint import checkpoint_preprocess, load_checkpoint
    from saywhy.model.feature_cache import FeatureCache

    from saywhy.files import check_replaceable

    if (args.root is None) == (args.from_shards is None):
        raise SaywhyError("give either --root (a dataset) or --from-shards (the folders 'saywhy extract' wrote)")
    if args.from_shards and (args.distributed or _launched()):
        raise SaywhyError("--from-shards reads features already extracted: run it as one process, without torchrun")
    distributed = args.distributed or _launched()
    check_replaceable(args.out, "explainer")  # before minutes of work, not after
    config = config_from(args)
    one_process = not (args.from_shards or distributed) and getattr(args, "part_maps", True)
    if config.pools_evidence and not one_process:
        raise SaywhyError(f"--evidence-pooling {config.evidence_pooling} needs part maps learned in one process: "
                          "drop --no-part-maps, --from-shards and torchrun, or choose --evidence-pooling global")
    if args.visibility_source not in (None, "pooled") and not getattr(args, "part_maps", True):
        raise SaywhyError(f"--visibility-source {config.visibility_source} reads the part maps: drop --no-part-maps, "
                          "or choose --visibility-source pooled")
    ws = workspace(args)
    model, meta = load_checkpoint(args.model, map_location=network_device(args))
    metadata = {"checkpoint": str(args.model.resolve()), "arch": meta["arch"]}
    synonyms = None
    if args.synonyms is not None:
        from saywhy.text.synonyms import read_synonym_file

        synonyms = read_synonym_file(args.synonyms)
    if not one_process:  # part maps are learned only by a fit in one process that may learn them
        config = config.for_fit(part_maps=False)
    if args.from_shards:
        from saywhy.shards import fit_from_shards

        explainer, report = fit_from_shards(args.from_shards, model, config, metadata=metadata, synonyms=synonyms)
        rank = 0
    else:
        dataset, source, extractor = fit_data(args, ws)
        preprocess = checkpoint_preprocess(meta)
        strict_check(args, dataset, getattr(preprocess, "crop", "none"), dataset.split(train=True))  # fit reads these only
        common = dict(source=source, extractor=extractor, layer=args.layer, head=args.head, progress=progress(args),
                      feature_cache=FeatureCache(ws.feature_cache), metadata=metadata, model_classes=meta.get("classes"))
        if distributed:
            import torch.distributed as dist

            from saywhy.distributed import fit_distributed, init

            if synonyms is not None:
                raise SaywhyError("--synonyms is not supported with a distributed fit yet: fit in one process")
            device = init()
            explainer, report = fit_distributed(dataset, model, preprocess, config, device=device, **common)
            rank = dist.get_rank()
        else:
            from saywhy.pipeline import fit_explainer, fit_part_maps, part_map_activations, resolve_layers

            train, part_maps = dataset.split(train=True), None
            keypoints = any(r.keypoints for r in train)
            config = config.for_fit(part_maps=one_process and keypoints)  # "auto" pooling: part maps if learned
            # a part-pooling fit learns its part maps itself
            if getattr(args, "part_maps", False) and not config.pools_evidence and keypoints:
                # the part-map sample's maps first, its pooled rows into the feature cache: the explainer's
                # pass below reads them, so a cold fit runs each image through the network once
                layers = resolve_layers(model, preprocess, args.layer, args.head)
                part_maps = part_map_activations(model, train, preprocess, layers, common["feature_cache"],
                                                 progress=progress(args))
            explainer, report = fit_explainer(dataset, model, preprocess, config, synonyms=synonyms,
                                              attribute_parts_file=args.attribute_parts, **common)
            if part_maps is not None:
                fit_part_maps(explainer, model, preprocess, train, args.attribute_parts, layers=layers,
                              progress=progress(args), activations=part_maps)
                del part_maps
            rank = 0
        parsed = dict(extractor.skipped) if extractor is not None else {}  # captions too long to parse
        if args.strict:  # fitting found more to skip (images without captions): refused before anything is written
            skip_summary(args, {**report.skipped, **parsed})
    if rank == 0:
        explainer.save(args.out)
        ws.remember_explainer(args.out)
        for warning in report.warnings:
            note(f"warning: {warning}")
        skipped = ", ".join(f"{n} {k}" for k, n in report.skipped.items() if n) or "none"
        print(f"{args.out}: {report.vocabulary_size} attributes from {report.images_used} images (skipped: {skipped})")
        if not args.from_shards:
            skip_summary(args, {**dataset.skipped, **report.skipped, **parsed}, dataset.examples)
    if distributed:
        import torch.distributed as dist

        dist.barrier()  # no rank leaves before rank 0 has written
        dist.destroy_process_group()


def _launched() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1
