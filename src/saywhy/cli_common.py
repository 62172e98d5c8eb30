"""What every sub-command shares: the workspace, the fitted explainer and its network."""
from __future__ import annotations

import argparse
from pathlib import Path

from saywhy.errors import SaywhyError


def add_session_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--explainer", type=Path, help="fitted explainer folder (default: the last one fitted or used by the demo)")
    p.add_argument("--model", type=Path, help="checkpoint folder (default: the one the explainer was fitted on)")


def workspace(args: argparse.Namespace):
    from saywhy.workspace import Workspace

    home = getattr(args, "home", None)
    return Workspace(home) if home else Workspace.default()


def load_explainer(args: argparse.Namespace):
    from saywhy.explain.explainer import Explainer

    folder = getattr(args, "explainer", None) or workspace(args).recall_explainer()
    if folder is None:
        raise SaywhyError("no fitted explainer: pass --explainer DIR, run 'saywhy fit', or run 'saywhy demo' first")
    return Explainer.load(folder)


def load_session(args: argparse.Namespace, explainer=None):
    """The explainer (given, or from --explainer / the workspace) with the network it was fitted on."""
    from saywhy.model.checkpoint import load_checkpoint
    from saywhy.pipeline import ExplainerSession

    explainer = explainer or load_explainer(args)
    model_folder = getattr(args, "model", None) or explainer.metadata_.get("checkpoint")
    if model_folder is None:
        raise SaywhyError("the explainer does not name its checkpoint: pass --model DIR")
    from saywhy.model.feature_cache import FeatureCache

    model, _ = load_checkpoint(model_folder)
    return ExplainerSession(explainer, model, feature_cache=FeatureCache(workspace(args).feature_cache))


def dataset_and_session(args: argparse.Namespace):
    """``--root`` with its explainer, or the demo's synthbirds with the demo's explainer.

    Returns (dataset, session, truth); truth is the synthbirds ground truth where there is
    one, else None.
    """
    from saywhy.data.synthbirds import load_truth

    if getattr(args, "root", None) is None:
        from saywhy.demo import ensure_demo
        from saywhy.pipeline import ExplainerSession

        art = ensure_demo(workspace(args), progress=not getattr(args, "quiet", False))
        if getattr(args, "explainer", None) or getattr(args, "model", None):
            session = load_session(args, None if args.explainer else art.explainer)
        else:
            session = ExplainerSession(art.explainer, art.model)
        return art.dataset, session, art.truth
    from saywhy.data.cub import read_cub

    dataset = read_cub(args.root, getattr(args, "captions", None))
    truth_root = dataset.root.parent
    truth = load_truth(truth_root) if (truth_root / "synthbirds_truth.json").is_file() else None
    return dataset, load_session(args), truth
