"""The ``saywhy`` command: parse arguments, call the library, print. Nothing else lives here.

Every error a user can cause arrives as a :class:`SaywhyError` and is printed as one
line on stderr with exit status 2; no traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

from saywhy import cli_cub, cli_gallery, cli_ground, cli_search
from saywhy.cli_common import (
    add_session_options,
    dataset_and_session,
    load_explainer,
    load_session,
    workspace,
)
from saywhy.errors import SaywhyError

log = logging.getLogger("saywhy")


def _add_config_options(p: argparse.ArgumentParser) -> None:
    from saywhy.explain.explainer import ExplainerConfig

    d = ExplainerConfig()
    p.add_argument("--method", choices=["saywhy", "paper"], default="saywhy",
                   help="defaults for the options below: saywhy's measured best, or the paper's method")
    p.add_argument("--top-k", type=int, default=None, help=f"attributes per sentence (default {d.top_k})")
    p.add_argument("--sigma-activation", default=None, help=f"sigma of eq. 3: top, l1, softmax, minmax, identity (default {d.sigma_activation}; paper: l1)")
    p.add_argument("--top-fraction", type=float, default=None, help=f"with --sigma-activation top: share of images per filter (default {d.top_fraction})")
    p.add_argument("--contrast", default=None, help=f"margin or difference (default {d.contrast}; paper: difference)")
    p.add_argument("--filter-scale", default=None, help=f"none or max (default {d.filter_scale})")
    p.add_argument("--sigma-decision", default=None, help=f"sigma of eq. 6 and 8: l1, softmax, minmax, identity (default {d.sigma_decision})")
    p.add_argument("--prior", default=None, help=f"attribute prior of eq. 1: tfidf, tfidf_sum, uniform (default {d.prior})")
    p.add_argument("--likelihood", default=None, help=f"eq. 2-4: sum (paper) or mean (default {d.likelihood})")
    p.add_argument("--min-df", type=int, default=None, help=f"minimum number of caption files an attribute appears in (default {d.min_df})")
    p.add_argument("--attribute-model", default=None, help=f"evidence (logistic model per attribute) or cooccurrence (the paper's p(t|f)) (default {d.attribute_model})")
    p.add_argument("--evidence-l2", type=float, default=None, help=f"L2 penalty of the evidence model (default {d.evidence_l2})")
    p.add_argument("--no-class-weighting", dest="class_weighting", action="store_const", const=False, default=None,
                   help="evidence model: explain with p(t|x), the image alone, instead of weighing filters by p(f|x,c)")
    p.add_argument("--grounding", default=None, help=f"eq. 9 weights with the evidence model: signed or positive (the attribute's own weights), or part (the mean over attributes with the same noun) (default {d.grounding})")
    p.add_argument("--sentence", default=None, help=f"natural (articles, plurals) or paper (the paper's template) (default {d.sentence})")


CONFIG_OPTIONS = ("top_k", "sigma_activation", "top_fraction", "contrast", "filter_scale", "sigma_decision", "prior",
                  "likelihood", "min_df", "attribute_model", "evidence_l2", "class_weighting", "grounding", "sentence")


def _config_from(args: argparse.Namespace):
    from saywhy.explain.explainer import ExplainerConfig

    given = {name: getattr(args, name) for name in CONFIG_OPTIONS if getattr(args, name) is not None}
    return ExplainerConfig.paper(**given) if args.method == "paper" else ExplainerConfig(**given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saywhy", description="Say in words why an image classifier decided what it did.")
    parser.add_argument("--home", type=Path, help="workspace folder for data, models and explainers (default $SAYWHY_HOME or ./.saywhy)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="synthbirds + small CNN: generate, train, fit and explain (cached)")
    p.add_argument("--images", type=int, default=6, help="test images to explain")
    p.add_argument("--seed", type=int, default=0, help="which test images are drawn")

    p = sub.add_parser("data", help="generate or fetch a dataset")
    p.add_argument("name", choices=["synthbirds", "cub"], help="synthbirds: generate; cub: download CUB-200-2011 + captions")
    p.add_argument("--dest", type=Path, required=True, help="folder to write")
    p.add_argument("--n-images", type=int, default=3000, help="synthbirds: images")
    p.add_argument("--image-size", type=int, default=128, help="synthbirds: pixels")
    p.add_argument("--seed", type=int, default=0, help="synthbirds: seed")
    p.add_argument("--label-noise", type=float, default=0.0, help="synthbirds: share of wrong labels (CUB has about 0.04)")
    cli_cub.add_data_options(p)

    p = sub.add_parser("train", help="train the small CNN, or fit a pretrained network's head, on a CUB-layout dataset")
    p.add_argument("--root", type=Path, help="dataset folder (default: the demo's synthbirds)")
    p.add_argument("--captions", type=Path, help="text_c10 folder if not beside the images")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--image-size", type=int, default=None, help="input pixels (default: 64 for smallcnn, the network's own otherwise)")
    p.add_argument("--crop", choices=["none", "bbox"], default="none", help="crop to the bounding box (the paper's setting)")
    p.add_argument("--seed", type=int, default=0)
    cli_cub.add_train_options(p)

    p = sub.add_parser("fit", help="learn the filter-attribute p.d.f. (eq. 1-4) for a trained model")
    p.add_argument("--model", type=Path, required=True, help="checkpoint folder ('saywhy train' writes one)")
    p.add_argument("--root", type=Path, required=True, help="CUB-layout dataset folder")
    p.add_argument("--captions", type=Path, help="text_c10 folder if not beside the images")
    p.add_argument("--attributes", type=Path,
                   help="attributes instead of captions: a CSV/JSONL of image -> attributes, or 'cub' for CUB's 312 binary labels")
    p.add_argument("--out", type=Path, required=True, help="explainer folder to write")
    p.add_argument("--layer", help="final conv layer name (default: found automatically)")
    p.add_argument("--head", help="linear head name (default: found automatically)")
    _add_config_options(p)

    p = sub.add_parser("explain", help="explain the network's decision for images")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--class", dest="class_", help="explain this class instead of the predicted one")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    add_session_options(p)

    p = sub.add_parser("contrast", help="why the predicted class and not another (Figure 1)")
    p.add_argument("image", type=Path)
    p.add_argument("--vs", required=True, help="the other class")
    p.add_argument("--as", dest="as_", help="the class to defend (default: predicted)")
    p.add_argument("--json", action="store_true")
    add_session_options(p)

    p = sub.add_parser("describe", help="class-level description (eq. 7-8)")
    p.add_argument("classes", nargs="*", help="class names or indices")
    p.add_argument("--list", action="store_true", help="list the classes")
    p.add_argument("--json", action="store_true")
    add_session_options(p)

    cli_search.register(sub)
    cli_ground.register(sub)
    cli_gallery.register(sub)

    p = sub.add_parser("evaluate", help="the paper's Tables 1-3, faithfulness and debugging, each beside baselines")
    p.add_argument("--root", type=Path, help="CUB-layout dataset (default: the demo's synthbirds)")
    p.add_argument("--captions", type=Path, help="text_c10 folder if not beside the images")
    p.add_argument("--name", help="name of the result files (default: synthbirds, or the dataset folder's name)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for NAME_eval.json and NAME_eval.md")
    p.add_argument("--grounding-source", choices=["captions", "truth"], default="captions",
                   help="ground each image's caption attributes (the paper) or its true attributes (synthbirds)")
    p.add_argument("--grounding-size", type=int, help="network input size for grounding only (default: the model's own)")
    p.add_argument("--ablation", action="store_true", help="also compare, on the same images, the paper's exact method and each of saywhy's choices (ablation_configs)")
    p.add_argument("--seed", type=int, default=0)
    add_session_options(p)
    return parser


# ----- commands ----------------------------------------------------------------------------------
def _print_explanation(image, explanation, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"image": str(image), **explanation.to_dict()}))
        return
    print(f"{image}: {explanation.sentence}")
    print("   " + _attribute_line(explanation))


def _attribute_line(explanation) -> str:
    """p(t|x,c) for the paper's model; the evidence model's class-weighted evidence (its p rounds to 1.000)."""
    if explanation.evidence is None:
        return ", ".join(f"{t} {p:.3f}" for t, p in explanation.attributes)
    return "evidence: " + ", ".join(f"{t} {z:+.1f}" for (t, _), z in zip(explanation.attributes, explanation.evidence))


def cmd_demo(args) -> None:
    from saywhy.demo import ensure_demo
    from saywhy.pipeline import ExplainerSession

    started = time.perf_counter()
    art = ensure_demo(workspace(args), progress=not args.quiet)
    session = ExplainerSession(art.explainer, art.model)
    test = art.dataset.split(train=False)
    rng = random.Random(args.seed)
    chosen = rng.sample(test, min(args.images, len(test)))
    acc = art.model_meta.get("test_accuracy")
    print(f"saywhy demo: synthbirds, {len(art.dataset.class_ids)} species, small CNN "
          f"(test accuracy {acc:.1%}), {len(art.explainer.vocabulary_)} caption attributes\n")
    for record, explanation in zip(chosen, session.explain(chosen)):
        truth = art.explainer.readable_name(art.dataset.class_index(record.class_id))
        mark = "right" if explanation.class_name == truth else f"wrong, truly {truth}"
        print(f"{record.path.name} ({mark})\n  {explanation.sentence}")
        print("  top attributes, " + _attribute_line(explanation))
    pair = art.truth.get("confusable_pairs", [None])[0]
    if pair:
        candidates = [r for r in test if r.class_id == pair["a"]]
        record = rng.choice(candidates)
        contrast = session.contrast(record, art.dataset.class_index(pair["b"]),
                                    class_=art.dataset.class_index(pair["a"]))
        print(f"\nwhy not its look-alike? {record.path.name}\n  {contrast.sentence}")
        print(f"  {contrast.explanation.sentence}\n  {contrast.other.sentence}")
    print(f"\nexplainer: {art.explainer_path} ({time.perf_counter() - started:.1f} s)")
    print("next: saywhy explain IMAGE, saywhy contrast IMAGE --vs CLASS, saywhy describe CLASS")


def cmd_data(args) -> None:
    from saywhy.data.synthbirds import SynthConfig, generate

    if args.name == "cub":
        cli_cub.run_data_cub(args)
        return
    config = SynthConfig(n_images=args.n_images, image_size=args.image_size, seed=args.seed, label_noise=args.label_noise)
    print(generate(args.dest, config, progress=not args.quiet))


def cmd_train(args) -> None:
    from saywhy.data.cub import read_cub
    from saywhy.data.images import Preprocess
    from saywhy.demo import DEMO_ARCH, DEMO_ARCH_KWARGS, ensure_synthbirds
    from saywhy.model.checkpoint import build_model, save_checkpoint
    from saywhy.model.train import TrainConfig, train_classifier

    if cli_cub.is_pretrained(args):
        cli_cub.run_train_pretrained(args)
        return
    root = args.root or ensure_synthbirds(workspace(args), progress=not args.quiet)
    dataset = read_cub(root, args.captions)
    preprocess = Preprocess(image_size=args.image_size or 64, crop=args.crop)
    model = build_model(DEMO_ARCH, len(dataset.class_ids), **DEMO_ARCH_KWARGS)
    report = train_classifier(model, dataset, preprocess, TrainConfig(epochs=args.epochs, seed=args.seed),
                              progress=not args.quiet)
    fingerprint_file = Path(root) / ".synthbirds_fingerprint"
    meta = {"arch": DEMO_ARCH, "arch_kwargs": DEMO_ARCH_KWARGS, "classes": [dataset.class_names[c] for c in dataset.class_ids],
            "class_ids": dataset.class_ids, "preprocess": preprocess.to_dict(), "dataset": str(root),
            "dataset_fingerprint": fingerprint_file.read_text().strip() if fingerprint_file.is_file() else None, **report}
    save_checkpoint(args.out, model, meta)
    print(f"{args.out}: test accuracy {report['test_accuracy']:.1%} on {report['test_images']} images "
          f"({report['train_seconds']} s)")


def cmd_fit(args) -> None:
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

    model, meta = load_checkpoint(args.model)
    dataset = read_cub(args.root, args.captions)
    source, extractor = "captions", None
    if args.attributes and str(args.attributes) == "cub":
        dataset, source = attach_cub_binary_attributes(dataset, *cub_attribute_files(dataset.root)), "attributes"
    elif args.attributes:
        dataset, source = attach_attribute_file(dataset, args.attributes), "attributes"
    else:
        extractor = PhraseExtractor(cache_dir=workspace(args).phrase_cache, progress=not args.quiet)
    explainer, report = fit_explainer(dataset, model, checkpoint_preprocess(meta), _config_from(args), source=source,
                                      extractor=extractor, layer=args.layer, head=args.head, progress=not args.quiet,
                                      feature_cache=FeatureCache(workspace(args).feature_cache),
                                      metadata={"checkpoint": str(args.model.resolve()), "arch": meta["arch"]})
    explainer.save(args.out)
    workspace(args).remember_explainer(args.out)
    skipped = ", ".join(f"{n} {k}" for k, n in report.skipped.items() if n) or "none"
    print(f"{args.out}: {report.vocabulary_size} attributes from {report.images_used} images (skipped: {skipped})")


def cmd_explain(args) -> None:
    session = load_session(args)
    for image, explanation in zip(args.images, session.explain(args.images, args.class_)):
        _print_explanation(image, explanation, args.json)


def cmd_contrast(args) -> None:
    session = load_session(args)
    contrast = session.contrast(args.image, args.vs, args.as_)
    if args.json:
        print(json.dumps({"image": str(args.image), **contrast.to_dict()}))
        return
    print(contrast.sentence)
    print(f"  {contrast.explanation.sentence}\n  {contrast.other.sentence}")


def cmd_describe(args) -> None:
    explainer = load_explainer(args)
    if args.list or not args.classes:
        for i in range(len(explainer.class_names_)):
            print(f"{i:4d}  {explainer.readable_name(i)}")
        return
    for name in args.classes:
        description = explainer.describe(int(name) if name.isdigit() else name)
        if args.json:
            print(json.dumps(description.to_dict()))
        else:
            print(description.sentence)


def cmd_evaluate(args) -> None:
    from saywhy.evaluate import ablation, ablation_configs, evaluate, markdown, record_sample
    from saywhy.text.phrases import PhraseExtractor

    ws = workspace(args)
    dataset, session, truth = dataset_and_session(args)
    session.map_memo = {} if args.ablation else None  # one forward pass per image for every ablation row
    name = args.name or ("synthbirds" if args.root is None else args.root.name)
    extractor = PhraseExtractor(cache_dir=ws.phrase_cache, progress=not args.quiet)
    result = evaluate(session, dataset, extractor, truth, args.seed, args.grounding_source,
                      grounding_size=args.grounding_size)
    result["sample"] = record_sample(session, dataset, dataset.split(train=False), seed=args.seed)
    if args.ablation:
        result["ablation"] = ablation(session, dataset, extractor, ablation_configs(), truth, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}_eval.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out / f"{name}_eval.md").write_text(markdown(result, f"{name}: saywhy evaluate"))
    print(markdown(result, f"{name}: saywhy evaluate"))
    print(f"wrote {args.out / f'{name}_eval.json'} and {args.out / f'{name}_eval.md'}")


COMMANDS = {"demo": cmd_demo, "data": cmd_data, "train": cmd_train, "fit": cmd_fit, "explain": cmd_explain,
            "contrast": cmd_contrast, "describe": cmd_describe, "search": cli_search.run_search,
            "debug": cli_search.run_debug, "evaluate": cmd_evaluate, "ground": cli_ground.run_ground,
            "gallery": cli_gallery.run_gallery}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="saywhy: %(message)s")
    try:
        COMMANDS[args.command](args)
    except SaywhyError as error:
        print(f"saywhy: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("saywhy: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
