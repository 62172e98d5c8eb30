"""How the ``saywhy`` command behaves, whatever it computes: parsing, flag names, exit codes, pipes, errors.

Most tests only parse (no network, no data); the few that run a command use the session's
``tiny_noisy_synthbirds`` explainer.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import saywhy
from saywhy.cli import build_parser, main
from saywhy.cli import common as cli_common
from saywhy.errors import SaywhyError

SRC = Path(saywhy.__file__).resolve().parents[1]


def _saywhy(*argv: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """``python -m saywhy ARGV`` with this checkout's sources."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "saywhy", *argv], env=env, stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=120)


def _usage_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: saywhy"), err
    return err.strip().splitlines()[-1]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("saywhy: error: "), err
    return err[0]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


FIT = ["fit", "--model", "m", "--root", "r", "--out", "o"]


# ----- every option checked when parsed ----------------------------------------------------------
ENUMERATED = ["--sigma-activation", "--contrast", "--filter-scale", "--sigma-decision", "--prior", "--likelihood",
              "--attribute-model", "--grounding", "--sentence", "--method"]


@pytest.mark.parametrize("option", ENUMERATED)
def test_every_enumerated_fit_option_refuses_an_unknown_value(option, capsys):
    last = _usage_error(capsys, FIT + [option, "bogus"])
    assert f"argument {option}: invalid choice: 'bogus'" in last


def test_the_choices_are_the_librarys():
    from saywhy.cli import fit
    from saywhy.core.filter_attribute import FILTER_SCALES, LIKELIHOODS
    from saywhy.core.normalization import SIGMAS
    from saywhy.core.prior import PRIOR_KINDS
    from saywhy.explain.attribute_models import ATTRIBUTE_MODELS
    from saywhy.explain.explainer import ExplainerConfig

    assert fit.SIGMAS == tuple(SIGMAS) and fit.SIGMA_ACTIVATIONS == ("top", *SIGMAS)
    assert fit.ATTRIBUTE_MODELS == tuple(ATTRIBUTE_MODELS)
    assert (fit.FILTER_SCALES, fit.LIKELIHOODS, fit.PRIORS) == (FILTER_SCALES, LIKELIHOODS, PRIOR_KINDS)
    for values, field in ((fit.CONTRASTS, "contrast"), (fit.FILTER_SCALES, "filter_scale"), (fit.PRIORS, "prior"),
                          (fit.LIKELIHOODS, "likelihood"), (fit.SIGMA_ACTIVATIONS, "sigma_activation"),
                          (fit.SIGMAS, "sigma_decision")):
        assert getattr(ExplainerConfig(), field) in values
        for value in values:  # every choice offered is one the library takes
            ExplainerConfig(**{field: value})
    for values, field in ((fit.GROUNDINGS, "grounding"), (fit.SENTENCES, "sentence")):
        for value in values:
            ExplainerConfig(**{field: value})
    assert set(fit.CONFIG_OPTIONS) <= set(ExplainerConfig.__dataclass_fields__)


@pytest.mark.parametrize("argv, option, says", [
    (FIT + ["--top-k", "0"], "--top-k", "at least 1"),
    (FIT + ["--top-k", "2.5"], "--top-k", "whole number"),
    (FIT + ["--min-df", "0"], "--min-df", "at least 1"),
    (FIT + ["--top-fraction", "0"], "--top-fraction", "(0, 1)"),
    (FIT + ["--top-fraction", "1"], "--top-fraction", "(0, 1)"),
    (FIT + ["--top-fraction", "nan"], "--top-fraction", "finite"),
    (FIT + ["--evidence-l2", "0"], "--evidence-l2", "above 0"),
    (FIT + ["--evidence-l2", "inf"], "--evidence-l2", "finite"),
    (FIT + ["--evidence-l2=-inf"], "--evidence-l2", "finite"),
    (["train", "--out", "o", "--epochs", "0"], "--epochs", "at least 1"),
    (["train", "--out", "o", "--image-size", "4"], "--image-size", "at least 8"),
    (["train", "--out", "o", "--batch-size", "0"], "--batch-size", "at least 1"),
    (["demo", "--images", "0"], "--images", "at least 1"),
    (["data", "synthbirds", "--dest", "d", "--image-size", "7"], "--image-size", "at least 8"),
    (["data", "synthbirds", "--dest", "d", "--n-images", "0"], "--n-images", "at least 1"),
    (["data", "synthbirds", "--dest", "d", "--label-noise", "1"], "--label-noise", "[0, 1)"),
    (["data", "synthbirds", "--dest", "d", "--label-noise", "-0.1"], "--label-noise", "[0, 1)"),
    (["data", "synthbirds", "--dest", "d", "--label-noise", "nan"], "--label-noise", "finite"),
    (["debug", "--top-k", "0"], "--top-k", "at least 1"),
    (["search", "-a", "red crown", "--top", "0"], "--top", "at least 1"),
    (["evaluate", "--grounding-size", "2"], "--grounding-size", "at least 8"),
    (["data", "synthbirds", "--dest", "d", "--seed=-1"], "--seed", "at least 0"),
    (["gallery", "--seed", "x"], "--seed", "whole number"),
    (["ground", "i.jpg", "-a", "red crown", "--sigma", "top"], "--sigma", "invalid choice"),
    (["explain", "i.jpg", "--box", "1,2,3"], "--box", "x,y,w,h"),
    (["explain", "i.jpg", "--box", "1,2,0,4"], "--box", "above 0"),
    (["explain", "i.jpg", "--box", "1,nan,3,4"], "--box", "finite"),
    (["explain", "i.jpg", "--box", "a,b,c,d"], "--box", "a number"),
])
def test_ranges_and_finite_numbers_are_checked_when_parsed(argv, option, says, capsys):
    last = _usage_error(capsys, argv)
    assert f"argument {option}" in last and says in last


def test_a_bad_option_fails_at_once_without_importing_torch():
    started = time.perf_counter()
    done = _saywhy("fit", "--contrast", "bogus", "--model", "x", "--root", "y", "--out", "z")
    seconds = time.perf_counter() - started
    assert done.returncode == 2 and "--contrast" in done.stderr.strip().splitlines()[-1]
    assert seconds < 3, f"{seconds:.2f} s to refuse an option"  # about 0.2 s; the bound is for a loaded machine
    probe = subprocess.run([sys.executable, "-c", "import sys; from saywhy.cli import main; "
                            "rc = main(['fit', '--contrast', 'bogus', '--model', 'x', '--root', 'y', '--out', 'z']); "
                            "print(sorted(m for m in ('torch', 'numpy', 'scipy', 'timm') if m in sys.modules))"],
                           env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "[]"


def test_help_fills_in_the_librarys_defaults(capsys):
    from saywhy.explain.explainer import ExplainerConfig

    assert main(["fit", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"attributes per sentence (default {ExplainerConfig().top_k})" in out and "{default}" not in out


# ----- one flag name per idea --------------------------------------------------------------------
def test_one_flag_name_per_idea():
    for name, sub in _subparsers(build_parser()).items():
        options = {o for a in sub._actions for o in a.option_strings}
        assert not options & {"--sheet", "--output", "-o", "--k", "--topk", "--attributes-file"}, name
        for action in sub._actions:
            if "--model" in action.option_strings:
                assert "checkpoint folder" in action.help, name  # --model is always a checkpoint folder
            if "--out" in action.option_strings:
                assert action.dest == "out", name


def test_train_names_the_architecture_arch(capsys):
    args = build_parser().parse_args(["train", "--out", "o", "--arch", "efficientnet_lite0"])
    assert args.arch == "efficientnet_lite0"
    assert "unrecognized arguments: --model" in _usage_error(capsys, ["train", "--out", "o", "--model", "smallcnn"])


def test_ground_and_search_take_attributes_the_same_way(capsys):
    parser = build_parser()
    ground = parser.parse_args(["ground", "i.jpg", "-a", "red crown", "--attribute", "black wing", "--out", "g.png"])
    search = parser.parse_args(["search", "-a", "red crown", "--attribute", "black wing", "--out", "s.png"])
    assert ground.attribute == search.attribute == ["red crown", "black wing"]
    assert ground.out == Path("g.png") and search.out == Path("s.png")
    assert "-a/--attribute" in _usage_error(capsys, ["search"])


def test_classes_are_given_by_index_or_name():
    args = build_parser().parse_args(["contrast", "i.jpg", "--vs", "3", "--as", "Red Bird"])
    assert (args.vs, args.as_) == (3, "Red Bird")
    assert build_parser().parse_args(["explain", "i.jpg", "--class", "0"]).class_ == 0
    assert build_parser().parse_args(["describe", "1", "Blue_Bird"]).classes == [1, "Blue_Bird"]


# ----- the command itself ------------------------------------------------------------------------
def test_no_arguments_prints_the_help_and_exits_2(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: saywhy")
    assert all(name in captured.err for name in ("demo", "explain", "gallery"))


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"saywhy {saywhy.__version__}\n" == "saywhy 0.1.0\n"


def test_python_dash_m_saywhy_is_the_command():
    done = _saywhy("--version")
    assert (done.returncode, done.stdout) == (0, "saywhy 0.1.0\n")


@pytest.mark.parametrize("argv", [["--quiet", "--home", "h", "demo"], ["demo", "--quiet", "--home", "h"],
                                  ["--quiet", "demo", "--home", "h"], ["--home", "h", "demo", "--quiet"]])
def test_global_options_before_or_after_the_command(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.home == Path("h") and args.command == "demo"


def test_global_option_defaults():
    args = build_parser().parse_args(["demo"])
    assert args.quiet is False and args.home is None


def test_progress_bars_only_on_a_terminal(monkeypatch):
    class Stream:
        def __init__(self, tty: bool):
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert cli_common.progress(argparse.Namespace(quiet=False))
    assert not cli_common.progress(argparse.Namespace(quiet=True))
    monkeypatch.setattr(sys, "stderr", Stream(False))
    assert not cli_common.progress(argparse.Namespace(quiet=False))


def test_a_closed_pipe_ends_quietly():
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: every write breaks the pipe
    try:
        done = _saywhy("fit", "--help", stdout=write)
    finally:
        os.close(write)
    assert done.returncode in (0, 141) and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_describe_list_into_a_closed_pipe_ends_quietly(tiny_noisy_synthbirds):
    read, write = os.pipe()
    os.close(read)
    try:
        done = _saywhy("describe", "--list", "--explainer", str(tiny_noisy_synthbirds["exp"]), stdout=write)
    finally:
        os.close(write)
    assert done.returncode in (0, 141) and done.stderr == ""


def test_head_reads_one_line_and_saywhy_ends_quietly(tiny_noisy_synthbirds):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(f"{sys.executable} -m saywhy describe --list --explainer {tiny_noisy_synthbirds['exp']} | head -1",
                          shell=True, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", *done.stdout.split()[1:]] and len(done.stdout.splitlines()) == 1
    assert done.stderr == ""


# ----- exit status: 2 for usage, 1 for runtime errors, one line each ------------------------------
def test_a_runtime_error_is_one_line_and_exit_1(tmp_path, capsys):
    assert main(["describe", "--explainer", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in _one_line_error(capsys)


def test_a_home_that_is_a_file_is_one_line(tmp_path, capsys):
    home = tmp_path / "home"
    home.write_text("not a folder")
    assert main(["--home", str(home), "describe"]) == 1
    assert f"{home} is a file, not a folder" in _one_line_error(capsys)


def test_os_errors_are_one_line(monkeypatch, capsys):
    from saywhy.cli import describe

    def denied(args):
        raise PermissionError(13, "Permission denied", "/somewhere/explainer")

    monkeypatch.setattr(describe, "run", denied)
    assert main(["describe"]) == 1
    assert "/somewhere/explainer: Permission denied" in _one_line_error(capsys)


def test_a_decompression_bomb_is_one_line(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from saywhy.cli import describe

    big = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)

    def open_it(args):
        Image.open(big)

    monkeypatch.setattr(describe, "run", open_it)
    assert main(["describe"]) == 1
    assert "too large to open safely" in _one_line_error(capsys)


# ----- explain: several files, folders, --box ----------------------------------------------------
@pytest.fixture
def tiny(tiny_noisy_synthbirds) -> dict:
    return tiny_noisy_synthbirds


def _images(tiny, n: int) -> list[Path]:
    return sorted((tiny["root"] / "CUB_200_2011" / "images").rglob("*.jpg"))[:n]


def test_explain_goes_on_past_a_bad_file_and_exits_1(tiny, tmp_path, capsys):
    first, second = _images(tiny, 2)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    argv = ["explain", str(first), str(tmp_path / "missing.jpg"), str(bad), str(second), "--explainer", str(tiny["exp"])]
    assert main(argv) == 1
    captured = capsys.readouterr()
    explained = [line.split(": ", 1)[0] for line in captured.out.splitlines() if not line.startswith(" ")]
    assert explained == [str(first), str(second)]
    err = captured.err.strip().splitlines()
    assert len(err) == 3 and "missing.jpg does not exist" in err[0] and "bad.jpg cannot be read" in err[1]
    assert err[2] == "saywhy: error: 2 of 4 images could not be explained (see above)"


def test_explain_takes_a_folder(tiny, tmp_path, capsys):
    import shutil

    folder = tmp_path / "birds"
    (folder / "inner").mkdir(parents=True)
    first, second = _images(tiny, 2)
    shutil.copy(first, folder / "inner" / "b.jpg")
    shutil.copy(second, folder / "a.jpg")
    (folder / "notes.txt").write_text("not an image")
    assert main(["explain", str(folder), "--explainer", str(tiny["exp"])]) == 0
    explained = [line.split(": ", 1)[0] for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert explained == [str(folder / "a.jpg"), str(folder / "inner" / "b.jpg")]
    (tmp_path / "empty").mkdir()
    assert main(["explain", str(tmp_path / "empty"), str(folder / "a.jpg"), "--explainer", str(tiny["exp"])]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{folder / 'a.jpg'}: This is a")
    assert "found under" in captured.err and "1 of 2 images could not be explained" in captured.err


def test_explain_box_is_passed_on(tiny, capsys):
    image = _images(tiny, 1)[0]
    assert main(["explain", str(image), "--box", "4,4,40,40", "--explainer", str(tiny["exp"])]) == 0
    assert "because it has" in capsys.readouterr().out


def test_explain_an_unknown_class_fails_once(tiny, capsys):
    images = [str(p) for p in _images(tiny, 3)]
    assert main(["explain", *images, "--class", "Dodo", "--explainer", str(tiny["exp"])]) == 1
    assert "unknown class 'Dodo'" in _one_line_error(capsys)


# ----- the last explainer ------------------------------------------------------------------------
def test_debug_without_root_uses_the_last_explainer_and_its_dataset(tiny, tmp_path, capsys):
    from saywhy.workspace import Workspace

    Workspace(tmp_path / "home").remember_explainer(tiny["exp"])
    out = tmp_path / "debug"
    assert main(["--quiet", "--home", str(tmp_path / "home"), "debug", "--out", str(out), "--link-images"]) == 0
    err = capsys.readouterr().err
    assert f"saywhy: using explainer {tiny['exp'].resolve()} (the last one fitted" in err
    assert "using the explainer's dataset" in err and "demo" not in err.replace("by the demo", "")
    assert (out / "debug.json").is_file()


def test_without_any_explainer_gallery_falls_back_to_the_demo_and_says_so(tmp_path, monkeypatch, capsys):
    import saywhy.demo

    def no_demo_here(*args, **kwargs):
        raise SaywhyError("the demo is not built in this test")

    monkeypatch.setattr(saywhy.demo, "ensure_demo", no_demo_here)
    assert main(["--home", str(tmp_path / "home"), "gallery", "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("saywhy: no fitted explainer: using the demo's synthbirds")
    assert err[1] == "saywhy: error: the demo is not built in this test"


def test_last_explainer_without_its_dataset_asks_for_root(tiny, tmp_path, capsys):
    import json
    import shutil

    moved = tmp_path / "exp"
    shutil.copytree(tiny["exp"], moved)
    meta_file = moved / "explainer.json"
    meta = json.loads(meta_file.read_text())
    meta["metadata"]["dataset_root"] = str(tmp_path / "gone")
    from saywhy.explain.explainer import _content_sha256

    meta["content_sha256"] = _content_sha256(meta)  # as if saved so (an edit is refused otherwise)
    meta_file.write_text(json.dumps(meta))
    assert main(["--home", str(tmp_path / "home"), "evaluate", "--explainer", str(moved), "--out", str(tmp_path)]) == 1
    assert "is not at hand: pass --root DIR" in capsys.readouterr().err.strip().splitlines()[-1]


def test_evaluate_refuses_a_dataset_with_other_classes(tiny, tmp_path, capsys):
    from saywhy.data.synthbirds import SynthConfig, generate

    other = generate(tmp_path / "other", SynthConfig(n_images=24, image_size=32, n_species=3), workers=1, progress=False)
    assert main(["--home", str(tmp_path / "home"), "debug", "--root", str(other), "--explainer", str(tiny["exp"])]) == 1
    assert "the dataset's classes differ from the explainer's (3 against 4)" in _one_line_error(capsys)


@pytest.mark.parametrize("command", ["fit", "train"])
def test_out_never_replaces_a_folder_of_the_users_files(tiny, tmp_path, capsys, command):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    argv = (["fit", "--model", str(tiny["ckpt"]), "--root", str(tiny["root"])] if command == "fit"
            else ["train", "--root", str(tiny["root"]), "--epochs", "1"])
    assert main(["--home", str(tmp_path / "home")] + argv + ["--out", str(mine)]) == 1
    assert "refusing to replace" in _one_line_error(capsys)
    assert (mine / "thesis.tex").read_text() == "precious" and [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_fit_out_refuses_the_checkpoint_it_fits(tiny, tmp_path, capsys):
    import shutil

    ckpt = shutil.copytree(tiny["ckpt"], tmp_path / "ckpt")
    assert main(["--home", str(tmp_path / "home"), "fit", "--model", str(ckpt), "--root", str(tiny["root"]),
                 "--out", str(ckpt)]) == 1
    assert "it holds a saywhy checkpoint, not an explainer" in _one_line_error(capsys)
    assert (ckpt / "model.safetensors").is_file()


def test_an_unexpected_error_is_one_line_unless_debug(monkeypatch, capsys):
    from saywhy.cli import describe

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(describe, "run", broken)
    assert main(["describe", "--list"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "internal error, ZeroDivisionError" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["describe", "--list", "--debug"])
