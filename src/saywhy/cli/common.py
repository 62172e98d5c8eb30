"""What every sub-command shares: option types, shared options, the workspace, the explainer and its network.

The ``type=`` helpers validate an option when it is parsed, so a bad value is a usage
error (exit 2) naming the option, before anything heavy is imported or computed.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from saywhy.errors import SaywhyError


# ----- option types: validated when parsed -------------------------------------------------------
def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def finite_float(text: str) -> float:
    """A float that is neither nan nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def float_in(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False) -> Callable[[str], float]:
    """A finite float in an interval, e.g. ``float_in(0, 1, low_open=True, high_open=True)`` for (0, 1)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"

    def parse(text: str) -> float:
        value = finite_float(text)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            if low is not None and high is None:
                raise argparse.ArgumentTypeError(f"must be {'above' if low_open else 'at least'} {low}, got {text}")
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value

    parse.__name__ = f"number in {interval}"
    return parse


def box(text: str) -> tuple[float, float, float, float]:
    """``x,y,w,h`` in pixels of the image: four finite numbers, width and height above 0."""
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"expected x,y,w,h (four numbers separated by commas), got {text!r}")
    x, y, w, h = (finite_float(p.strip()) for p in parts)
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be above 0, got {text!r}")
    return x, y, w, h


def class_ref(text: str) -> int | str:
    """A class as ``describe --list`` prints it: its 0-based index, or its name (raw or readable)."""
    text = text.strip()
    return int(text) if text.isdigit() else text


# ----- shared options ----------------------------------------------------------------------------
def global_options(suppress: bool) -> argparse.ArgumentParser:
    """``--home``, ``--quiet`` and ``--debug``, for the main parser and (``suppress``) as a parent of every sub-command.

    On the sub-commands the defaults are ``SUPPRESS``, so ``saywhy --quiet demo`` keeps the
    value given before the sub-command while ``saywhy demo --quiet`` sets it after.
    """
    parser = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--home", type=Path, default=default,
                        help="workspace folder for data, models and explainers (default $SAYWHY_HOME or ./.saywhy)")
    parser.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="no progress bars")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="show the full traceback of an unexpected error (for reporting a bug)")
    return parser


def add_command(subparsers: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    """A sub-command's parser, taking ``--home`` and ``--quiet`` after the command as well as before it."""
    return subparsers.add_parser(name, parents=[global_options(suppress=True)], **kwargs)


def add_session_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--explainer", type=Path, help="fitted explainer folder (default: the last one fitted or used by the demo)")
    p.add_argument("--model", type=Path, help="checkpoint folder (default: the one the explainer was fitted on)")


def add_attribute_option(p: argparse.ArgumentParser) -> None:
    """Attributes, given the same way to every command that takes them: ``-a "red crown" -a "black wing"``."""
    p.add_argument("-a", "--attribute", action="append", required=True, metavar="ATTRIBUTE",
                   help='an "adjective noun" attribute from the explainer\'s vocabulary, e.g. "white eyebrow"; '
                        'repeat for several')


def add_dataset_options(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--root", type=Path, help=f"CUB-layout dataset folder (default: {default})")
    p.add_argument("--captions", type=Path, help="text_c10 folder if not beside the images")
    add_strict_option(p)


def progress(args: argparse.Namespace) -> bool:
    """Progress bars only for a person watching a terminal."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def note(message: str) -> None:
    """One line on stderr telling the user what the command chose for them."""
    print(f"saywhy: {message}", file=sys.stderr)


# ----- what long runs skip ------------------------------------------------------------------------
def add_strict_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true",
                   help="make anything that would be skipped and counted (unreadable images, bad boxes, malformed or "
                        "duplicate lines, files not UTF-8, images without captions) an error, before any output is written")


def strict_check(args: argparse.Namespace, dataset, crop: str = "none", records=None) -> None:
    """With ``--strict``: refuse a dataset that skipped anything when read, or one of ``records`` (default
    all) whose image cannot be decoded (or cropped to its box, with ``crop="bbox"``), before minutes of
    work and before any output."""
    if not getattr(args, "strict", False):
        return
    from saywhy.data.images import unreadable_images
    from saywhy.text.phrases import MAX_CAPTION_CHARS

    too_long = sum(len(c) > MAX_CAPTION_CHARS for r in dataset.records for c in r.captions or ())
    skip_summary(args, {**dataset.skipped, f"caption over {MAX_CAPTION_CHARS:,} characters (not parsed)": too_long},
                 dataset.examples)

    bad = unreadable_images(dataset.records if records is None else records, crop)
    if bad:
        skip_summary(args, {"unreadable images": len(bad)}, {"unreadable images": str(bad[0])})


def skip_summary(args: argparse.Namespace, skipped: dict[str, int], examples: dict[str, str] | None = None) -> None:
    """The line that ends every long run: everything skipped, by reason, with the first file of a reason
    where one is known; with ``--strict`` any of it is an error instead."""
    examples = examples or {}
    counted = [(reason, n) for reason, n in skipped.items() if n]
    text = "; ".join(f"{n} {reason}" + (f" (first: {examples[reason]})" if reason in examples else "")
                     for reason, n in counted)
    if counted and getattr(args, "strict", False):
        raise SaywhyError(f"--strict: {text}: fix or remove these inputs, or run without --strict to skip and count them")
    note(f"skipped: {text or 'nothing'}")


# ----- the device the network runs on ------------------------------------------------------------
AMP_CHOICES = ("bf16", "fp16")


def device_name(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether it is there is checked when the command runs)."""
    kind, _, index = text.strip().lower().partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text.strip().lower()


def add_device_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--amp``, for every command that runs the network."""
    p.add_argument("--device", type=device_name, default=None, metavar="DEVICE",
                   help="where the network runs: cpu (default), cuda, cuda:N or mps")
    p.add_argument("--amp", choices=AMP_CHOICES, default=None,
                   help="CUDA only: run the network under autocast in bfloat16 or float16 (faster on recent GPUs; "
                        "features differ slightly and are cached apart); ignored, with a note, on the CPU")


def network_device(args: argparse.Namespace) -> str:
    """The device name of ``--device`` (``cpu`` without it), checked, or one line saying it is not available here.

    A name, not a ``torch.device``: torch is imported only to check an accelerator, so that a
    command served from the feature cache on the CPU never imports it.
    """
    name = getattr(args, "device", None) or "cpu"
    kind, _, index = name.partition(":")
    if kind == "cpu":
        return name
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            built = "torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise SaywhyError(f"--device {name}: {built} on this machine: use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise SaywhyError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered from 0: pick one of them")
    elif kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SaywhyError(f"--device {name}: Apple's MPS is not available on this machine: use --device cpu")
    return name


@contextmanager
def network_options(args: argparse.Namespace) -> Iterator[None]:
    """Check ``--device`` before any work and run the command under ``--amp`` (commands without them: nothing)."""
    if not hasattr(args, "device"):
        yield
        return
    kind = network_device(args).partition(":")[0]
    amp = getattr(args, "amp", None)
    if amp and kind != "cuda":
        note(f"--amp {amp} applies on CUDA only: the network runs in full precision on {kind}")
        amp = None
    if amp is None:
        yield
        return
    from saywhy.model.activations import mixed_precision

    with mixed_precision(amp):
        yield


def on_device(args: argparse.Namespace, model):
    """``model`` moved to ``--device`` (the one place the CLI moves a network)."""
    return model.to(network_device(args)) if getattr(args, "device", None) else model


# ----- workspace, explainer, network -------------------------------------------------------------
def workspace(args: argparse.Namespace):
    from saywhy.workspace import Workspace

    home = getattr(args, "home", None)
    ws = Workspace(home) if home else Workspace.default()
    if ws.home.exists() and not ws.home.is_dir():
        raise SaywhyError(f"the workspace {ws.home} is a file, not a folder: pass --home DIR (or set SAYWHY_HOME) to a folder")
    return ws


def explainer_folder(args: argparse.Namespace) -> Path | None:
    """``--explainer``, else the last one fitted (said on stderr), else None."""
    folder = getattr(args, "explainer", None)
    if folder is not None:
        return folder
    folder = workspace(args).recall_explainer()
    if folder is not None:
        note(f"using explainer {folder} (the last one fitted or used by the demo; --explainer DIR picks another)")
    return folder


def load_explainer(args: argparse.Namespace, folder: Path | None = None):
    from saywhy.explain.explainer import Explainer

    folder = folder or explainer_folder(args)
    if folder is None:
        raise SaywhyError("no fitted explainer: pass --explainer DIR, run 'saywhy fit', or run 'saywhy demo' first")
    return Explainer.load(folder)


def load_session(args: argparse.Namespace, explainer=None):
    """The explainer (given, or from --explainer / the workspace) with the network it was fitted on."""
    from saywhy.model.feature_cache import FeatureCache
    from saywhy.pipeline import ExplainerSession

    return ExplainerSession.from_checkpoint(explainer or load_explainer(args), getattr(args, "model", None),
                                            feature_cache=FeatureCache(workspace(args).feature_cache),
                                            advice="pass --model DIR", device=network_device(args))


def dataset_and_session(args: argparse.Namespace):
    """The dataset and session for ``gallery``, ``debug`` and ``evaluate``.

    ``--root`` with the explainer; without it, the explainer's own dataset (the explainer
    is ``--explainer`` or the last one fitted); only without any explainer, the demo's
    synthbirds and explainer. Returns (dataset, session, truth); truth is the synthbirds
    ground truth where there is one, else None.
    """
    from saywhy.data.cub import read_cub
    from saywhy.data.synthbirds import load_truth

    root = getattr(args, "root", None)
    folder = explainer_folder(args)
    if root is None and folder is None:
        from saywhy.demo import ensure_demo
        from saywhy.pipeline import ExplainerSession

        note("no fitted explainer: using the demo's synthbirds and explainer (pass --root and --explainer for yours)")
        art = ensure_demo(workspace(args), progress=progress(args))
        session = load_session(args, art.explainer) if getattr(args, "model", None) \
            else ExplainerSession(art.explainer, on_device(args, art.model))
        return art.dataset, session, art.truth
    explainer = load_explainer(args, folder)
    if root is None:
        root = explainer.metadata_.get("dataset_root")
        if not root or not Path(root).is_dir():
            raise SaywhyError(f"the explainer's dataset {root or '(not recorded)'} is not at hand: pass --root DIR")
        note(f"using the explainer's dataset {root} (--root DIR picks another)")
    dataset = read_cub(root, getattr(args, "captions", None))
    truth_root = dataset.root.parent
    truth = load_truth(truth_root) if (truth_root / "synthbirds_truth.json").is_file() else None
    session = load_session(args, explainer)
    strict_check(args, dataset, getattr(session.preprocess, "crop", "none"))
    return session.check_dataset(dataset), session, truth


# ----- printing ----------------------------------------------------------------------------------
def attribute_line(explanation) -> str:
    """The top attributes with their readable scores (what ``score_name`` says they are).

    The evidence model's are the calibrated p(t|x), as percentages; the paper's p(t|x,c) is
    a distribution over the whole vocabulary, so its values are small and printed as they are.
    """
    if not explanation.attributes:
        return "no attribute has evidence in this image"
    if explanation.evidence is None:
        return "p(t|x,c): " + ", ".join(f"{t} {p:.3f}" for t, p in explanation.attributes)
    return "p(t|x): " + ", ".join(f"{t} {p:.0%}" for t, p in explanation.attributes)


def class_line(explanation) -> str:
    """ "Carolina Wren 87%; next: House Wren 8%, Bewick Wren 3%" (softmax probabilities)."""
    asked = "" if explanation.predicted else " (asked for; not the network's choice)"
    others = ", ".join(f"{name} {p:.0%}" for name, p in explanation.alternatives)
    return f"{explanation.class_name} {explanation.probability:.0%}{asked}" + (f"; next: {others}" if others else "")
