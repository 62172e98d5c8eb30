"""Robustness benchmark (issue 10): bad inputs through the real CLI, real kills, fuzzing, memory.

Everything runs on a small synthbirds dataset made in a temporary folder, through
``python -m saywhy`` in subprocesses:

- bad inputs: each kind the issue lists, with how it ended (exit code, the last stderr
  line, whether a traceback appeared, whether the user's files survived);
- kill points: the process is really killed (SIGKILL, sent by itself) at a chosen point of
  extraction, caption parsing, training, fitting or saving, chosen by a hook that wraps one
  function in the child before the CLI starts (``SAYWHY_BENCH_KILL=module:function:when:n``)
  or after a share of the uninterrupted run's time; then the command is run again, and the
  result compared with an uninterrupted run's (every array equal), the old output checked;
- fuzzing: the property tests (tests/test_properties*.py) with ``SAYWHY_FUZZ=robustness``,
  with hypothesis' own counts of the cases run;
- memory: peak RSS of ``ExplainerSession.explain`` over 1,000 and 10,000 small images with
  the demo CNN, each in a fresh process.

Writes benchmarks/results/robustness.json and the Robustness section of BENCHMARKS.md.
Run:  nice .venv/bin/python benchmarks/robustness.py   (90 minutes of wall time in all on the shared 2-core machine at load 15-50;
      --parts runs some of it, SAYWHY_ROBUSTNESS_RESULTS=FILE writes elsewhere, --merge FILE takes parts back)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SRC = REPO / "src"
RESULTS = Path(os.environ.get("SAYWHY_ROBUSTNESS_RESULTS", HERE / "results" / "robustness.json"))
MARKDOWN = REPO / "BENCHMARKS.md"
BEGIN, END = "<!-- robustness:begin -->", "<!-- robustness:end -->"
sys.path.insert(0, str(SRC))

# Runs in the child before the CLI: wraps one function so that its n-th call kills the process.
KILL_HOOK = r'''
import importlib, os, runpy, signal, sys

def _die():
    os.kill(os.getpid(), signal.SIGKILL)

def _wrap(owner, name, when, n):
    original, calls = getattr(owner, name), [0]
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if when == "before" and calls[0] == n:
            _die()
        result = original(*args, **kwargs)
        if when == "after" and calls[0] == n:
            _die()
        return result
    setattr(owner, name, wrapper)

class _OsOf:  # the os module as one saywhy module sees it, so that only its calls are wrapped
    def __init__(self, real):
        self.__dict__["_real"] = real
    def __getattr__(self, name):
        return getattr(self._real, name)

spec = os.environ.get("SAYWHY_BENCH_KILL")
if os.environ.get("SAYWHY_BENCH_NO_EXCHANGE"):
    import saywhy.files
    saywhy.files._exchange = lambda a, b: False  # the rename-aside path of systems without renameat2
if spec:
    module, path, when, n = spec.split(":")
    n = int(n)
    if module == "torch.optim":
        import torch.optim.optimizer as optimizer
        calls = [0]
        def hook(opt, args, kwargs):
            calls[0] += 1
            if calls[0] == n:
                _die()
        optimizer.register_optimizer_step_post_hook(hook)
    else:
        owner = importlib.import_module(module)
        parts = path.split(".")
        if parts[0] == "os":
            owner.os = _OsOf(owner.os)
        for part in parts[:-1]:
            owner = getattr(owner, part)
        _wrap(owner, parts[-1], when, n)
sys.argv = ["saywhy", *sys.argv[1:]]
runpy.run_module("saywhy", run_name="__main__", alter_sys=True)
'''


# ----- running the CLI ---------------------------------------------------------------------------
def child_env(home: Path, extra: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC), "SAYWHY_HOME": str(home), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop("SAYWHY_BENCH_KILL", None)
    env.update(extra or {})
    return env


def saywhy(argv: list[str], home: Path, *, env: dict | None = None, cwd: Path | None = None, hook: Path | None = None,
           timeout: float = 600, kill_after: float | None = None) -> dict:
    """Run ``python -m saywhy --home HOME ARGV``; with ``hook``, through the kill hook; with
    ``kill_after``, SIGKILL after that many seconds. Returns rc, the last stderr line, traceback or not, wall time."""
    command = [sys.executable, str(hook) if hook else "-m", *([] if hook else ["saywhy"]), "--home", str(home), *argv]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=child_env(home, env), cwd=cwd or REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=kill_after if kill_after is not None else timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        out, err = process.communicate()
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return {"rc": process.returncode, "last_line": lines[-1] if lines else "", "traceback": "Traceback" in err,
            "stderr_lines": len(lines), "stdout": out, "stderr": err, "seconds": round(time.perf_counter() - started, 2)}


def arrays_of(folder: Path, name: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(folder / name)


def same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.is_dir() else {}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.glob(f".{folder.name}.*") if not p.name.endswith(".lock"))


# ----- the dataset and its model -----------------------------------------------------------------
def make_base(base: Path) -> dict:
    from saywhy.data.synthbirds import SynthConfig, generate

    root = generate(base / "birds", SynthConfig(n_images=48, image_size=48, n_species=3), workers=1, progress=False)
    home = base / "home"
    ckpt, exp = base / "ckpt", base / "exp"
    train = saywhy(["train", "--root", str(root), "--epochs", "2", "--image-size", "32", "--out", str(ckpt)], home)
    fit = saywhy(["fit", "--model", str(ckpt), "--root", str(root), "--min-df", "1", "--out", str(exp)], home)
    assert train["rc"] == 0 and fit["rc"] == 0, (train["stderr"], fit["stderr"])
    return {"base": base, "root": root, "home": home, "ckpt": ckpt, "exp": exp,
            "images": sorted((root / "CUB_200_2011" / "images").rglob("*.jpg"))}


def copy_dataset(ctx: dict, where: Path) -> Path:
    return shutil.copytree(ctx["root"], where / "birds")


def bomb_png(path: Path, side: int = 100_000) -> None:
    """A 1 kB PNG whose header promises side x side pixels (10 billion): what a decompression bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


# ----- bad inputs --------------------------------------------------------------------------------
def explain(ctx, *images, extra=()) -> list[str]:
    return ["explain", *map(str, images), "--explainer", str(ctx["exp"]), "--model", str(ctx["ckpt"]), "--json", *extra]


def fit_argv(ctx, root, out, extra=()) -> list[str]:
    return ["fit", "--model", str(ctx["ckpt"]), "--root", str(root), "--min-df", "1", "--out", str(out), *extra]


def damaged_explainer(ctx, where: Path, damage) -> list[str]:
    folder = shutil.copytree(ctx["exp"], where / "exp")
    damage(folder)
    return ["explain", str(ctx["images"][0]), "--explainer", str(folder), "--model", str(ctx["ckpt"])]


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def nan_checkpoint(ctx, where: Path) -> list[str]:
    """A checkpoint whose weights hold a NaN and whose digest was recomputed to match (so only the NaN check can catch it)."""
    from safetensors.torch import load_file, save_file

    from saywhy.model.checkpoint import load_checkpoint, weights_digest

    folder = shutil.copytree(ctx["ckpt"], where / "ckpt")
    state = load_file(folder / "model.safetensors")
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name][0] = float("nan")
    save_file(state, folder / "model.safetensors")
    model, _ = load_checkpoint(ctx["ckpt"])
    model.load_state_dict(state)
    edit_json(folder / "model.json", lambda m: m.update(weights_digest=weights_digest(model)))
    return ["explain", str(ctx["images"][0]), "--explainer", str(ctx["exp"]), "--model", str(folder)]


def dataset_case(ctx, where: Path, damage, command="fit", extra=()) -> list[str]:
    root = copy_dataset(ctx, where)
    damage(root / "CUB_200_2011", root)
    if command == "train":
        return ["train", "--root", str(root), "--epochs", "1", "--image-size", "16", "--out", str(where / "out"), *extra]
    return fit_argv(ctx, root, where / "out", extra)


def append_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line)


def first_caption(root: Path) -> Path:
    return sorted((root / "text_c10").rglob("*.txt"))[0]


def one_train_image(cub: Path) -> Path:
    split = dict(line.split() for line in (cub / "train_test_split.txt").read_text().splitlines())
    images = dict(line.split() for line in (cub / "images.txt").read_text().splitlines())
    return cub / "images" / images[next(i for i, t in split.items() if t == "1")]


def out_onto(ctx, where: Path, target: str) -> tuple[list[str], dict, Path | None, Path]:
    """fit --out pointed at something that is not a saywhy explainer: argv, env, cwd, and the folder that must survive."""
    if target == "user folder":
        folder = where / "mine"
        folder.mkdir()
        (folder / "thesis.tex").write_text("precious")
        return fit_argv(ctx, ctx["root"], folder), {}, None, folder
    if target == "dataset":
        root = copy_dataset(ctx, where)
        return fit_argv(ctx, root, root), {}, None, root
    if target == "checkpoint":
        ckpt = shutil.copytree(ctx["ckpt"], where / "ckpt")
        return ["fit", "--model", str(ckpt), "--root", str(ctx["root"]), "--out", str(ckpt)], {}, None, ckpt
    if target == "current directory":
        cwd = where / "work"
        cwd.mkdir()
        (cwd / "notes.txt").write_text("mine")
        return fit_argv(ctx, ctx["root"], "."), {}, cwd, cwd
    if target == "home directory":
        home = where / "user-home"
        home.mkdir()
        (home / ".bashrc").write_text("mine")
        return fit_argv(ctx, ctx["root"], home), {"HOME": str(home)}, None, home
    raise ValueError(target)


def bad_inputs(ctx: dict, scratch: Path, only: list[str] | None = None) -> list[dict]:
    """Each kind of bad input of issue 10, through the CLI; ``expect`` is how it must end (``only``: the
    kinds that contain one of these words)."""
    cases = []

    def case(kind: str, expect: str, prepare, check=None) -> None:
        if only and not any(word in kind for word in only):
            return
        where = Path(tempfile.mkdtemp(prefix="case-", dir=scratch))
        prepared = prepare(where)
        argv, env, cwd, keep = (prepared + (None, None, None))[:4] if isinstance(prepared, tuple) else (prepared, None, None, None)
        before = tree_bytes(keep) if keep is not None else None
        result = saywhy(argv, ctx["home"] if not (env or {}).get("SAYWHY_FRESH_HOME") else where / "home",
                        env={k: v for k, v in (env or {}).items() if k != "SAYWHY_FRESH_HOME"}, cwd=cwd)
        survived = None if keep is None else tree_bytes(keep) == before
        ok = {"one-line error": result["rc"] == 1 and result["stderr_lines"] >= 1
              and result["last_line"].startswith("saywhy: error: "),
              "usage error": result["rc"] == 2, "completed": result["rc"] == 0}[expect]
        extra = check(where, result) if check else None
        cases.append({"kind": kind, "expected": expect, "rc": result["rc"], "message": result["last_line"][:300],
                      "traceback": result["traceback"], "user_files_survived": survived, "check": extra,
                      "as_expected": bool(ok and not result["traceback"] and survived is not False and extra is not False),
                      "seconds": result["seconds"]})
        print(f"  {kind}: rc {result['rc']} {result['last_line'][:110]}", flush=True)

    images = ctx["images"]
    # images
    case("decompression bomb, one image", "one-line error", lambda w: (bomb_png(w / "bomb.png"), explain(ctx, w / "bomb.png"))[1])
    case("decompression bomb in a dataset (fit)", "completed",
         lambda w: dataset_case(ctx, w, lambda cub, root: bomb_png(one_train_image(cub))),
         lambda w, r: "unreadable images" in r["last_line"])
    case("truncated image in a dataset (fit)", "completed",
         lambda w: dataset_case(ctx, w, lambda cub, root: one_train_image(cub).write_bytes(one_train_image(cub).read_bytes()[:64])),
         lambda w, r: "1 unreadable images" in r["last_line"])
    case("image listed but missing (fit)", "completed",
         lambda w: dataset_case(ctx, w, lambda cub, root: one_train_image(cub).unlink()),
         lambda w, r: "1 image file missing" in r["last_line"])
    case("symlink loop as the image", "one-line error",
         lambda w: (os.symlink(w / "loop.jpg", w / "loop.jpg"), explain(ctx, w / "loop.jpg"))[1])
    case("a folder without images", "one-line error", lambda w: explain(ctx, w))
    case("16-bit PNG", "completed", lambda w: _sixteen_bit(ctx, w), lambda w, r: _same_explanation(r, w / "gray8.png", w / "gray16.png"))
    case("EXIF-rotated image", "completed", lambda w: _exif_pair(ctx, w), lambda w, r: _same_explanation(r, w / "upright.png", w / "tagged.png"))
    # boxes
    case("--box negative, off the image", "one-line error", lambda w: explain(ctx, images[0], extra=["--box=-90,-90,10,10"]))
    case("--box off the image", "one-line error", lambda w: explain(ctx, images[0], extra=["--box", "500,500,10,10"]))
    case("--box zero size", "usage error", lambda w: explain(ctx, images[0], extra=["--box", "0,0,0,5"]))
    case("--box NaN", "usage error", lambda w: explain(ctx, images[0], extra=["--box", "nan,0,5,5"]))
    case("--box inf", "usage error", lambda w: explain(ctx, images[0], extra=["--box", "0,0,inf,5"]))
    case("boxes NaN, inf, negative, zero-size, off-image in bounding_boxes.txt (train --crop bbox)", "completed",
         lambda w: dataset_case(ctx, w, _bad_boxes, command="train", extra=["--crop", "bbox"]),
         lambda w, r: "5 unreadable images" in r["last_line"])
    # records and text
    case("duplicate ids in every metadata file (fit)", "completed", lambda w: dataset_case(ctx, w, _duplicates),
         lambda w, r: all(f"duplicate id in {n}" in r["last_line"] for n in
                          ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt")))
    case("caption file in Latin-1 (fit)", "completed",
         lambda w: dataset_case(ctx, w, lambda cub, root: first_caption(root).write_bytes(
             first_caption(root).read_text().replace("a", "\xe0").encode("latin-1"))),
         lambda w, r: "caption file not UTF-8" in r["last_line"] and "(first: " in r["last_line"])
    case("caption file in UTF-16 with BOM (fit)", "completed",
         lambda w: dataset_case(ctx, w, lambda cub, root: first_caption(root).write_bytes(first_caption(root).read_text().encode("utf-16"))),
         lambda w, r: "UTF-8" not in r["last_line"])
    case("caption line over spaCy's length limit (fit)", "completed",
         lambda w: dataset_case(ctx, w, lambda cub, root: append_line(first_caption(root), "a red crown " * 90_000 + "\n")),
         lambda w, r: "caption over 100,000 characters" in r["last_line"])
    case("train split with no test images (train)", "completed",
         lambda w: dataset_case(ctx, w, lambda cub, root: (cub / "train_test_split.txt").write_text(
             "".join(f"{line.split()[0]} 1\n" for line in (cub / "train_test_split.txt").read_text().splitlines())), command="train"))
    case("empty images.txt", "one-line error", lambda w: dataset_case(ctx, w, lambda cub, root: (cub / "images.txt").write_text("")))
    case("caption folder of another dataset", "one-line error",
         lambda w: dataset_case(ctx, w, lambda cub, root: [p.rename(p.with_name("x" + p.name)) for p in (root / "text_c10").iterdir()]))
    case("--strict with a damaged dataset (fit)", "one-line error",
         lambda w: dataset_case(ctx, w, _duplicates, extra=["--strict"]), lambda w, r: not (w / "out").exists())
    # attribute files
    case("JSONL attributes as one string", "completed", lambda w: _attributes(ctx, w, "a.jsonl", "\n".join(
        json.dumps({"image": i, "attributes": "red crown; black wing"}) for i in range(1, 49))),
         lambda w, r: "2 attributes" in r["stdout"])
    case("JSONL attributes of the wrong types", "completed", lambda w: _attributes(ctx, w, "a.jsonl", "\n".join(
        [json.dumps({"image": 1, "attributes": 5}), json.dumps([1, 2]), json.dumps({"image": {"x": 1}, "attributes": ["red crown"]}),
         "not json", *[json.dumps({"image": i, "attributes": ["red crown", "black wing"]}) for i in range(2, 49)]])),
         lambda w, r: "malformed attribute row" in r["last_line"])
    case("CSV attributes without the attributes column", "one-line error", lambda w: _attributes(ctx, w, "a.csv", "image,x\n1,2\n"))
    case("CSV attributes in Latin-1", "one-line error",
         lambda w: _attributes(ctx, w, "a.csv", "image,attributes\n1,ros\xe9 crown\n", encoding="latin-1"))
    # saved files
    case("explainer arrays truncated", "one-line error", lambda w: damaged_explainer(
        ctx, w, lambda f: (f / "explainer.safetensors").write_bytes((f / "explainer.safetensors").read_bytes()[:200])))
    case("explainer arrays with a flipped byte", "one-line error",
         lambda w: damaged_explainer(ctx, w, lambda f: flip_middle_byte(f / "explainer.safetensors")))
    case("explainer JSON truncated", "one-line error", lambda w: damaged_explainer(
        ctx, w, lambda f: (f / "explainer.json").write_text((f / "explainer.json").read_text()[:100])))
    case("explainer JSON missing a key", "one-line error",
         lambda w: damaged_explainer(ctx, w, lambda f: edit_json(f / "explainer.json", lambda d: d.pop("vocabulary"))))
    case("explainer vocabulary edited", "one-line error",
         lambda w: damaged_explainer(ctx, w, lambda f: edit_json(f / "explainer.json", lambda d: d["vocabulary"].__setitem__(0, "red herring"))))
    case("explainer vocabulary of the wrong length", "one-line error",
         lambda w: damaged_explainer(ctx, w, lambda f: edit_json(f / "explainer.json", lambda d: d["vocabulary"].pop())))
    case("explainer class list of the wrong length", "one-line error",
         lambda w: damaged_explainer(ctx, w, lambda f: edit_json(f / "explainer.json", lambda d: d["class_names"].pop())))
    case("checkpoint truncated", "one-line error", lambda w: _damaged_checkpoint(ctx, w))
    case("checkpoint with NaN weights (digest matching)", "one-line error", lambda w: nan_checkpoint(ctx, w))
    case("feature cache with NaN rows", "completed", lambda w: _cache_case(ctx, w, "nan"), lambda w, r: _matches_fresh(ctx, w, r))
    case("image replaced, same size and mtime", "completed", lambda w: _cache_case(ctx, w, "replaced"), lambda w, r: _matches_fresh(ctx, w, r))
    case("truncated phrase cache (fit)", "completed", lambda w: _truncated_phrase_cache(ctx, w))
    # options and places
    case("--home is a file", "one-line error", lambda w: ((w / "f").write_text("x"), ["--home", str(w / "f"), "describe", "--list"],
                                                           {"SAYWHY_FRESH_HOME": "1"})[1:])
    case("--evidence-l2 nan", "usage error", lambda w: fit_argv(ctx, ctx["root"], w / "out", ["--evidence-l2", "nan"]))
    for target in ("user folder", "dataset", "checkpoint", "current directory", "home directory"):
        case(f"fit --out onto the {target}", "one-line error", lambda w, t=target: out_onto(ctx, w, t))
    case("train --out onto the user folder", "one-line error", lambda w: _train_onto_user_folder(ctx, w))
    return cases


def _bad_boxes(cub: Path, root: Path) -> None:
    lines = (cub / "bounding_boxes.txt").read_text().splitlines()
    bad = ["nan 1 5 5", "1 1 inf 5", "-90 -90 10 10", "1 1 0 5", "900 900 10 10"]
    (cub / "bounding_boxes.txt").write_text("\n".join(
        [f"{line.split()[0]} {bad[i]}" if i < len(bad) else line for i, line in enumerate(lines)]) + "\n")


def _duplicates(cub: Path, root: Path) -> None:
    for name, line in (("images.txt", None), ("image_class_labels.txt", None), ("train_test_split.txt", None),
                       ("bounding_boxes.txt", None)):
        first = (cub / name).read_text().splitlines()[0].split()
        other = (cub / name).read_text().splitlines()[-1].split()
        append_line(cub / name, " ".join([first[0], *other[1:]]) + "\n")


def _attributes(ctx, where: Path, name: str, text: str, encoding: str = "utf-8") -> list[str]:
    (where / name).write_bytes(text.encode(encoding))
    return fit_argv(ctx, ctx["root"], where / "out", ["--attributes", str(where / name)])


def _damaged_checkpoint(ctx, where: Path) -> list[str]:
    folder = shutil.copytree(ctx["ckpt"], where / "ckpt")
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:500])
    return ["explain", str(ctx["images"][0]), "--explainer", str(ctx["exp"]), "--model", str(folder)]


def _train_onto_user_folder(ctx, where: Path):
    folder = where / "mine"
    folder.mkdir()
    (folder / "data.csv").write_text("1,2\n")
    return ["train", "--root", str(ctx["root"]), "--epochs", "1", "--out", str(folder)], {}, None, folder


def _sixteen_bit(ctx, where: Path) -> list[str]:
    gray = np.asarray(Image.open(ctx["images"][0]).convert("L"))
    Image.fromarray(gray).save(where / "gray8.png")
    Image.fromarray((gray.astype(np.uint16) * 257)).save(where / "gray16.png")  # 0..65535: the same picture
    assert Image.open(where / "gray16.png").mode.startswith("I")
    return explain(ctx, where / "gray8.png", where / "gray16.png")


def _exif_pair(ctx, where: Path) -> list[str]:
    upright = np.asarray(Image.open(ctx["images"][1]).convert("RGB"))
    Image.fromarray(upright).save(where / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: stored turned the other way
    Image.fromarray(np.rot90(upright, 1).copy()).save(where / "tagged.png", exif=exif)
    return explain(ctx, where / "upright.png", where / "tagged.png")


def _explanations(result: dict) -> dict[str, dict]:
    return {Path(e["image"]).name: e for e in map(json.loads, result["stdout"].splitlines()) if e}


def _same_explanation(result: dict, a: Path, b: Path) -> bool:
    found = _explanations(result)
    keys = ("sentence", "class_name", "attributes")
    return a.name in found and b.name in found and all(found[a.name].get(k) == found[b.name].get(k) for k in keys) \
        and abs(found[a.name]["probability"] - found[b.name]["probability"]) < 1e-6


def _cache_case(ctx, where: Path, how: str):
    """Explain an image once (its features cached), damage the cache or replace the file, explain again."""
    from safetensors.numpy import load_file, save_file

    home = where / "home"
    image = where / "bird.bmp"  # uncompressed: another picture of the same size has the same byte count
    Image.open(ctx["images"][2]).convert("RGB").save(image)
    first = saywhy(explain(ctx, image), home)
    assert first["rc"] == 0, first["stderr"]
    if how == "nan":
        for shard in (home / "cache").rglob("*.safetensors"):
            data = load_file(shard)
            data["pooled"][:] = np.nan
            save_file(data, shard)
    else:
        stat = image.stat()
        Image.open(ctx["images"][3]).convert("RGB").resize(Image.open(image).size).save(image)
        assert image.stat().st_size == stat.st_size
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return explain(ctx, image), {"SAYWHY_HOME": str(home)}


def _matches_fresh(ctx, where: Path, result: dict) -> bool:
    fresh = saywhy(explain(ctx, where / "bird.bmp"), where / "fresh-home")
    return result["stdout"] == fresh["stdout"] and fresh["rc"] == 0


def _truncated_phrase_cache(ctx, where: Path):
    home = shutil.copytree(ctx["home"], where / "home")
    for cache in home.rglob("phrases-*.jsonl"):
        cache.write_text(cache.read_text()[: len(cache.read_text()) // 2] + "\n{not json")
    return fit_argv(ctx, ctx["root"], where / "out"), {"SAYWHY_HOME": str(home), "SAYWHY_FRESH_HOME": "1"}


# ----- kill points -------------------------------------------------------------------------------
KILLS = [
    # (name, phase, command, hook spec or seconds share, an old output at --out, rename-aside path)
    ("train: after the first optimizer step (of 2)", "training", "train", "torch.optim:step:after:1", False, False),
    ("train: new checkpoint written, before the swap (old one at --out)", "saving", "train", "saywhy.files:_swap_in:before:1", True, False),
    ("train: right after the atomic exchange, old not yet deleted", "saving", "train", "saywhy.files:_exchange:after:1", True, False),
    ("fit: captions parsed, phrase cache not yet written", "parsing", "fit", "saywhy.text.phrases:PhraseExtractor._save_cache:before:1", False, False),
    ("fit: features computed, cache shard not yet written", "extraction", "fit", "saywhy.model.feature_cache:_write_shard:before:1", False, False),
    ("fit: cache shard written to its temporary name, not renamed", "extraction", "fit", "saywhy.model.feature_cache:save_file:after:1", False, False),
    ("fit: features and phrases stored, before fitting", "fitting", "fit", "saywhy.explain.explainer:Explainer.fit:before:1", False, False),
    ("fit: explainer written, before the swap (old one at --out)", "saving", "fit", "saywhy.files:_swap_in:before:1", True, False),
    ("fit: right after the atomic exchange, old not yet deleted", "saving", "fit", "saywhy.files:_exchange:after:1", True, False),
    ("fit, rename path: old renamed aside, new not yet in", "saving", "fit", "saywhy.files:os.rename:after:1", True, True),
    ("fit, rename path: new renamed in, old aside not yet deleted", "saving", "fit", "saywhy.files:os.rename:after:2", True, True),
    ("fit: killed at 50% of the uninterrupted run's time", "any", "fit", 0.5, True, False),
    ("train: killed at 60% of the uninterrupted run's time", "any", "train", 0.6, False, False),
]


def kill_points(ctx: dict, scratch: Path) -> tuple[list[dict], dict]:
    hook = scratch / "kill_hook.py"
    hook.write_text(KILL_HOOK)
    commands = {
        "train": lambda out, seed=0: ["train", "--root", str(ctx["root"]), "--epochs", "2", "--image-size", "32",
                                      "--seed", str(seed), "--out", str(out)],
        "fit": lambda out, seed=0: ["fit", "--model", str(ctx["ckpt"]), "--root", str(ctx["root"]), "--min-df", "1",
                                    "--top-k", str(3 + seed), "--out", str(out)],
    }
    arrays_file = {"train": "model.safetensors", "fit": "explainer.safetensors"}
    reference = {}
    for command in commands:  # uninterrupted, from an empty workspace
        out = scratch / f"reference-{command}"
        run = saywhy(commands[command](out), scratch / f"reference-home-{command}")
        assert run["rc"] == 0, run["stderr"]
        reference[command] = {"arrays": arrays_of(out, arrays_file[command]), "seconds": run["seconds"]}
    old = {}
    for command in commands:  # what --out already holds, where a case says so: another saywhy result
        out = scratch / f"old-{command}"
        assert saywhy(commands[command](out, seed=1), scratch / "old-home")["rc"] == 0
        old[command] = out
    results = []
    for name, phase, command, spec, with_old, no_exchange in KILLS:
        where = Path(tempfile.mkdtemp(prefix="kill-", dir=scratch))
        home, out = where / "home", where / "out"
        if with_old:
            shutil.copytree(old[command], out)
        old_bytes = tree_bytes(out)
        env = {"SAYWHY_BENCH_NO_EXCHANGE": "1"} if no_exchange else {}
        if isinstance(spec, float):
            killed = saywhy(commands[command](out), home, env=env, kill_after=spec * reference[command]["seconds"])
        else:
            killed = saywhy(commands[command](out), home, env={**env, "SAYWHY_BENCH_KILL": spec}, hook=hook)
        after_kill = tree_bytes(out)
        aside = [p for p in where.glob(".out.old-*")]
        new_complete = (out / arrays_file[command]).is_file() and same_arrays(arrays_of(out, arrays_file[command]),
                                                                              reference[command]["arrays"])
        if with_old:
            intact = after_kill == old_bytes or new_complete or (not out.exists() and any(tree_bytes(a) == old_bytes for a in aside))
        else:
            intact = not out.exists() or new_complete  # nothing half-written where the output goes
        state = ("old output" if with_old and after_kill == old_bytes else "new output, complete" if new_complete
                 else "old output renamed aside (put back by the next run)" if aside else
                 "no output yet" if not out.exists() else "DAMAGED")
        left_after_kill = leftovers(out)
        resumed = saywhy(commands[command](out), home, env=env)
        equal = resumed["rc"] == 0 and same_arrays(arrays_of(out, arrays_file[command]), reference[command]["arrays"])
        cache_ok, cache_note = _cache_state(home)
        results.append({
            "kill_point": name, "phase": phase, "command": command,
            "mechanism": f"after {spec:.0%} of {reference[command]['seconds']} s" if isinstance(spec, float) else spec,
            "killed_by_sigkill": killed["rc"] == -signal.SIGKILL, "seconds_to_kill": killed["seconds"],
            "output_after_kill": state, "old_output_intact": intact, "leftovers_after_kill": left_after_kill,
            "resumed_rc": resumed["rc"], "resumed_equals_uninterrupted": equal,
            "leftovers_after_resume": leftovers(out), "cache_usable": cache_ok, "cache_note": cache_note,
            "resume_traceback": resumed["traceback"],
        })
        print(f"  {name}: killed {killed['rc'] == -9}, after kill: {state}, resumed equal {equal}, cache {cache_note}", flush=True)
    return results, {k: v["seconds"] for k, v in reference.items()}


def _cache_state(home: Path) -> tuple[bool, str]:
    """Every feature-cache file loads; temporary files a kill left behind are counted."""
    from safetensors.numpy import load_file

    shards = list((home / "cache").rglob("*.safetensors")) if (home / "cache").is_dir() else []
    partial = [s for s in shards if s.name.startswith(".partial-")]
    broken = 0
    for shard in shards:
        if shard in partial:
            continue
        try:
            load_file(shard)
        except Exception:
            broken += 1
    return broken == 0, f"{len(shards) - len(partial)} shard(s), {broken} unreadable, {len(partial)} temporary left"


# ----- fuzzing -----------------------------------------------------------------------------------
def fuzz() -> dict:
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-W", "ignore::RuntimeWarning",
                          "--hypothesis-show-statistics", "tests/test_properties.py", "tests/test_properties_inputs.py"],
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(SRC), "SAYWHY_FUZZ": "robustness",
                                        "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    per_test = {}
    for block in re.split(r"\n(?=tests/\S+::\S+:\n)", run.stdout):
        name = re.match(r"tests/\S+::(\S+):", block.strip())
        if name:
            counts = [tuple(map(int, m)) for m in re.findall(r"(\d+) passing, (\d+) failing, and (\d+) invalid", block)]
            per_test[name.group(1)] = {"passing": sum(c[0] for c in counts), "failing": sum(c[1] for c in counts),
                                       "invalid": sum(c[2] for c in counts)}
    summary = next((line.strip("= ") for line in reversed(run.stdout.splitlines())
                    if re.search(r"\d+ (passed|failed)", line)), run.stderr[-300:])
    return {"profile": "robustness", "rc": run.returncode, "pytest": summary, "tests": per_test,
            "cases_passing": sum(t["passing"] for t in per_test.values()),
            "cases_failing": sum(t["failing"] for t in per_test.values()),
            "seconds": round(time.perf_counter() - started, 1)}


# ----- memory ------------------------------------------------------------------------------------
MEMORY_CHILD = r'''
import json, resource, sys, time
import torch
torch.set_num_threads(1)
import saywhy
from saywhy.data.inputs import list_images
session = saywhy.load(sys.argv[1])
images = list_images(sys.argv[2])[: int(sys.argv[3])]
session.explain(images[:8])  # warm: the model and libraries loaded
warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
explanations = session.explain(images)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"images": len(explanations), "rss_after_warmup_mb": warm / 1024, "peak_rss_mb": peak / 1024,
                  "seconds": round(seconds, 1)}))
'''


def memory(scratch: Path, sizes=(1_000, 10_000)) -> dict:
    explainer = Path(os.environ.get("SAYWHY_BENCH_DEMO_EXPLAINER", "/work/bench_home/explainers/synthbirds-2fb845855c72"))
    if not (explainer / "explainer.json").is_file():  # a fresh machine: make the demo (minutes) in the scratch folder
        from saywhy.demo import ensure_demo
        from saywhy.workspace import Workspace

        explainer = ensure_demo(Workspace(scratch / "demo-home"), progress=False).folder
    folder = scratch / "many"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(max(sizes)):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    child = scratch / "memory_child.py"
    child.write_text(MEMORY_CHILD)
    runs = []
    for n in sizes:
        run = subprocess.run([sys.executable, str(child), str(explainer), str(folder), str(n)],
                             env=child_env(scratch / "memory-home"), capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(run.stderr[-2000:])
        runs.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(f"  explain {n} images: {runs[-1]}", flush=True)
    growth = runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]
    return {"explainer": str(explainer), "image_size": 32, "runs": runs,
            "growth_mb": round(growth, 1),
            "growth_per_image_kb": round(growth * 1024 / (sizes[-1] - sizes[0]), 2)}


def explainer_memory(sizes=(1_000, 10_000)) -> dict:
    """Peak Python memory (tracemalloc) of ``Explainer.explain`` alone on the demo explainer, random activations:
    the part of explain's memory that grows with the number of images asked for at once."""
    import tracemalloc

    from saywhy.explain.explainer import Explainer

    explainer = Explainer.load(os.environ.get("SAYWHY_BENCH_DEMO_EXPLAINER", "/work/bench_home/explainers/synthbirds-2fb845855c72"))
    rows = []
    for n in sizes:
        pooled = np.abs(np.random.default_rng(0).normal(size=(n, explainer.head_weights_.shape[1]))).astype(np.float32)
        tracemalloc.start()
        explanations = explainer.explain(pooled)
        kept, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append({"images": n, "peak_mb": round(peak / 2**20, 1), "kept_mb": round(kept / 2**20, 1),
                     "kept_per_image_kb": round(kept / n / 1024, 2)})
        del explanations
        print(f"  Explainer.explain {n}: {rows[-1]}", flush=True)
    return {"vocabulary": len(explainer.vocabulary_), "filters": int(explainer.head_weights_.shape[1]), "runs": rows}


# ----- report ------------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    bad, kills, fz, mem = result["bad_inputs"], result["kill_points"], result["fuzz"], result["memory"]
    lines = [BEGIN, "## Robustness",
             "",
             f"`{result['command']}` on {result['machine']}, {result['date']}; wall time of each part: bad inputs "
             f"{result['seconds_by_part']['bad_inputs']} s, kill points {result['seconds_by_part']['kill_points']} s, "
             f"fuzzing {result['seconds_by_part']['fuzz']} s, memory {result['seconds_by_part']['memory']} s "
             f"(setup {result['seconds_by_part'].get('setup', 0)} s). {result.get('timing_note', '')} "
             "A synthbirds dataset of 48 images, a 2-epoch small CNN at 32 px, each command a `python -m saywhy` subprocess.",
             "",
             f"**Bad inputs**: {sum(c['as_expected'] for c in bad)} of {len(bad)} ended as expected"
             + (f" (after fixes, {len(result['bad_inputs_rerun']['kinds'])} kinds rerun with `--cases`: "
                f"{', '.join(result['bad_inputs_rerun']['kinds'])})" if result.get("bad_inputs_rerun") else "")
             + f"; {sum(c['traceback'] for c in bad)} showed a traceback; user files survived in "
             f"{sum(c['user_files_survived'] is True for c in bad)} of {sum(c['user_files_survived'] is not None for c in bad)} cases that put them at risk.",
             "",
             "| input | expected | exit | how it ended (last line) | ok |",
             "| --- | --- | --- | --- | --- |"]
    for c in bad:
        message = c["message"].replace("|", "\\|")[:140]
        lines.append(f"| {c['kind']} | {c['expected']} | {c['rc']} | {message} | {'yes' if c['as_expected'] else '**no**'} |")
    lines += ["",
              f"**Kill points** (SIGKILL at the point, then the same command again): {sum(k['killed_by_sigkill'] for k in kills)} of "
              f"{len(kills)} killed; resumed result equal to the uninterrupted one (every array) in "
              f"{sum(k['resumed_equals_uninterrupted'] for k in kills)}; old output intact in {sum(k['old_output_intact'] for k in kills)}. "
              f"Uninterrupted: train {result['reference_seconds']['train']} s, fit {result['reference_seconds']['fit']} s.",
              "",
              "| kill point | phase | after the kill | old output intact | resumed = uninterrupted | leftovers after resume | cache |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for k in kills:
        lines.append(f"| {k['kill_point']} | {k['phase']} | {k['output_after_kill']} | {'yes' if k['old_output_intact'] else '**no**'} | "
                     f"{'yes' if k['resumed_equals_uninterrupted'] else '**no**'} | {', '.join(k['leftovers_after_resume']) or 'none'} | "
                     f"{k['cache_note']} |")
    lines += ["",
              f"**Fuzzing** (hypothesis, profile `robustness`, `SAYWHY_FUZZ=robustness`): {fz['cases_passing']:,} generated cases "
              f"passed, {fz['cases_failing']} failed, over {len(fz['tests'])} property tests in {fz['seconds']} s (pytest exit code {fz['rc']}); "
              "`make test` runs the same tests with the `test` profile (40 per test by default).",
              "",
              "| property test | cases |", "| --- | --- |"]
    lines += [f"| {name} | {t['passing']:,} |" for name, t in fz["tests"].items()]
    runs = mem["runs"]
    lines += ["",
              "**Memory of `explain`** (demo CNN, 32 px random images from a folder, a fresh process each): "
              + "; ".join(f"{r['images']:,} images: peak RSS {r['peak_rss_mb']:.0f} MB ({r['rss_after_warmup_mb']:.0f} MB after warm-up, "
                          f"{r['seconds']} s)" for r in runs)
              + f". Growth {mem['growth_mb']} MB for {runs[-1]['images'] - runs[0]['images']:,} more images "
              f"({mem['growth_per_image_kb']} kB per image). " + result.get("memory_note", ""),
              ]
    if "explainer_memory" in result:
        em = result["explainer_memory"]
        lines += ["", f"`Explainer.explain` alone (tracemalloc, {em['vocabulary']} attributes, {em['filters']} filters, blocks of 1,024 "
                  "images): " + "; ".join(f"{r['images']:,} images: peak {r['peak_mb']} MB, kept {r['kept_mb']} MB "
                                          f"({r['kept_per_image_kb']} kB per explanation)" for r in em["runs"]) + "."]
    lines += [END]
    return "\n".join(lines) + "\n"


def write_markdown(text: str) -> None:
    current = MARKDOWN.read_text() if MARKDOWN.is_file() else ""
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        current = head + text.rstrip("\n") + rest.split(END, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + text
    MARKDOWN.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="bad_inputs,kill_points,fuzz,memory")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--merge", type=Path, action="append", default=[],
                        help="results of parts run separately (SAYWHY_ROBUSTNESS_RESULTS=...) to take into these")
    parser.add_argument("--timing-note", default="", help="a sentence on how the parts were timed, for BENCHMARKS.md")
    parser.add_argument("--cases", help="comma-separated words: run only the bad inputs whose kind holds one, "
                                        "replacing those entries of the last results")
    args = parser.parse_args()
    parts = args.parts.split(",")
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="saywhy-robustness-"))
    result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    result["seconds_by_part"] = result.get("seconds_by_part", {})
    try:
        for other in args.merge:
            data = json.loads(other.read_text())
            for key in ("bad_inputs", "bad_inputs_rerun", "kill_points", "reference_seconds", "fuzz", "memory",
                        "explainer_memory", "memory_note"):
                if key in data:
                    result[key] = data[key]
            result["seconds_by_part"].update(data.get("seconds_by_part", {}))
        t = time.perf_counter()
        if {"bad_inputs", "kill_points"} & set(parts):
            ctx = make_base(scratch / "base")
            result["seconds_by_part"]["setup"] = round(time.perf_counter() - t, 1)
        for part in filter(None, parts):
            print(f"{part}:", flush=True)
            t = time.perf_counter()
            if part == "bad_inputs" and args.cases:
                rerun = {c["kind"]: c for c in bad_inputs(ctx, scratch, args.cases.split(","))}
                result["bad_inputs"] = [rerun.get(c["kind"], c) for c in result["bad_inputs"]]
                result["bad_inputs_rerun"] = {"kinds": sorted(rerun), "seconds": round(time.perf_counter() - t, 1)}
                continue
            if part == "bad_inputs":
                result["bad_inputs"] = bad_inputs(ctx, scratch)
                result.pop("bad_inputs_rerun", None)
            elif part == "kill_points":
                result["kill_points"], result["reference_seconds"] = kill_points(ctx, scratch)
            elif part == "fuzz":
                result["fuzz"] = fuzz()
            elif part == "memory":
                result["memory"] = memory(scratch)
            elif part == "explainer_memory":
                result["explainer_memory"] = explainer_memory()
            result["seconds_by_part"][part] = round(time.perf_counter() - t, 1)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.timing_note:
        result["timing_note"] = args.timing_note
    result.update(command="nice .venv/bin/python benchmarks/robustness.py", seconds=round(sum(
        v for k, v in result["seconds_by_part"].items()), 1),
        machine=f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        date=time.strftime("%Y-%m-%d", time.gmtime()))
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    if all(k in result for k in ("bad_inputs", "kill_points", "fuzz", "memory")):
        write_markdown(markdown(result))
    print(f"wrote {RESULTS} ({round(time.perf_counter() - started, 1)} s)")


if __name__ == "__main__":
    main()
