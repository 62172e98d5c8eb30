"""Benchmark: what an explanation costs next to the network's own forward pass (issue 13).

Sections (``--sections``, default all), each merged into ``benchmarks/results/speed.json``:

* ``ratios``: per model (EfficientNet-Lite0 224 px, the cub50 checkpoint and explainer; the
  demo CNN 64 px; a ResNet-50 224 px with random weights and a small explainer fitted on
  random features), at batch 1 and 32, the median over interleaved repetitions of each
  method's time divided by a bare ``torch.inference_mode()`` forward of the same images in
  the same repetition: saywhy's explain from tensors, ``ExplainerSession.explain(files)``
  (decoding included, no feature cache), explain + ``ground`` of 5 attributes (the public
  API: two calls, one forward), the same with the heatmaps upsampled to the input, Captum's
  LayerGradCam (target given), pytorch-grad-cam's GradCAM, and Captum's
  IntegratedGradients with 50 steps (batch 1 only). Ratios are of CPU time (this process,
  every thread: a shared, loaded machine disturbs it least), wall-clock ratios beside. The peers are used only here: a peer
  that is not installed is skipped with a note.
* ``extraction``: images per second of ``extract_activations`` on image files (decoding
  included) against the best bare forward on the same images already decoded, and the bare
  forward with glibc's default allocator (a child process, for the before/after).
* ``memo``: resident memory of ``evaluate --ablation``'s maps memo over two rows of the same
  images, a plain dict (before) against :class:`saywhy.pipeline.SpilledMaps` (after).
* ``fit``: a cold ``saywhy fit`` of the cub50 checkpoint (fresh SAYWHY_HOME, so every
  feature is computed; the parsed captions copied in, so that spaCy is not what is timed)
  with the code before issue 13 (``--before``, a source tree) and this one, in one sitting.
* ``command``: the wall and CPU time of a cache-hit one-image ``saywhy explain`` (a new
  process), demo and cub50: the code before issue 13, this code on an explainer without the
  network record (the network is built), this code on one with it (no network built); and
  ``python -c "import saywhy.cli"``. Each with the load average.

One torch thread; repetitions interleaved; medians. Run:
    PYTHONPATH=src .venv/bin/python benchmarks/speed.py [--before /tmp/speed_before] [--sections ratios,extraction]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "speed.json"
CUB = Path(os.environ.get("SAYWHY_CUB50", "/work/shared/data/cub50"))
BENCH_HOME = Path(os.environ.get("SAYWHY_BENCH_HOME", "/work/bench_home"))
CUB_CKPT = Path("/work/bench/ckpt")
# fitted with the code that records the network (saywhy.model.lazy_network): a cache-hit explain builds none
CUB_EXP = Path(os.environ.get("SAYWHY_SPEED_CUB_EXP", BENCH_HOME / "lazynet" / "exp"))
DEMO_EXP = Path(os.environ.get("SAYWHY_SPEED_DEMO_EXP", BENCH_HOME / "lazynet" / "demo_exp"))
# the same checkpoints' explainers fitted before that record existed: the eager path, for the command section
CUB_EXP_EAGER = Path(os.environ.get("SAYWHY_SPEED_CUB_EXP_EAGER", "/work/bench/exp"))
DEMO_EXP_EAGER = Path(os.environ.get("SAYWHY_SPEED_DEMO_EXP_EAGER", BENCH_HOME / "explainers" / "synthbirds-2fb845855c72"))
PYTHON = sys.executable


def _median(values: list[float]) -> float:
    return round(float(statistics.median(values)), 3)


# ----- ratios ---------------------------------------------------------------------------------
def _cub_files(n: int) -> list[str]:
    return sorted(glob.glob(str(CUB / "CUB_200_2011" / "images" / "*" / "*.jpg")))[:n]


def _setups(names: list[str]):
    """(name, session, files, feature layer module name) per model."""
    import numpy as np
    import torch

    from saywhy.explain.explainer import Explainer, ExplainerConfig
    from saywhy.model.checkpoint import build_model, load_checkpoint
    from saywhy.pipeline import ExplainerSession

    for name in names:
        if name == "efficientnet_lite0_224":
            explainer = Explainer.load(CUB_EXP)
            model, _ = load_checkpoint(CUB_CKPT)
            yield name, ExplainerSession(explainer, model), _cub_files(32)
        elif name == "demo_cnn_64":
            explainer = Explainer.load(DEMO_EXP)
            model, _ = load_checkpoint(explainer.metadata_["checkpoint"])
            session = ExplainerSession(explainer, model)
            root = Path(explainer.metadata_["dataset_root"])
            files = sorted(glob.glob(str(root / "images" / "*" / "*.png")) + glob.glob(str(root / "images" / "*" / "*.jpg")))
            yield name, session, files[:32]
        elif name == "resnet50_224":
            from saywhy.data.images import Preprocess
            from saywhy.pipeline import resolve_layers

            torch.manual_seed(0)
            model = build_model("torchvision:resnet50", 10).eval()
            preprocess = Preprocess(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
            layers = resolve_layers(model, preprocess)
            rng = np.random.default_rng(0)
            pooled = rng.gamma(2.0, 0.5, (120, layers.n_filters))  # random features: a real fit, for timing only
            counts = (rng.random((120, 40)) < 0.2).astype(float)
            import scipy.sparse as sp

            terms = [f"attribute{i} part{i % 7}" for i in range(40)]
            weight = model.fc.weight.detach().double().numpy()
            bias = model.fc.bias.detach().double().numpy()
            from saywhy.model.checkpoint import weights_digest

            meta = {"layer": layers.feature_layer, "head": layers.head, "preprocess": preprocess.to_dict(),
                    "weights_digest": weights_digest(model)}
            explainer = Explainer(ExplainerConfig(min_df=1)).fit(pooled, sp.csr_matrix(counts), terms, weight,
                                                                 [f"{i:03d}.class{i}" for i in range(10)], bias, meta)
            yield name, ExplainerSession(explainer, model, preprocess), _cub_files(32)


def _bare(model, x) -> None:
    import torch

    with torch.inference_mode():
        model(x)


def _timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``: the CPU time of this process (every thread) is what a loaded,
    shared machine disturbs least; both are recorded."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _peers(model, layer_module):
    """Captum and pytorch-grad-cam callables (images, targets) -> maps, or notes saying why absent."""
    peers, notes = {}, {}
    try:
        from captum.attr import IntegratedGradients, LayerGradCam

        gradcam = LayerGradCam(model, layer_module)
        ig = IntegratedGradients(model)
        peers["captum_layergradcam"] = lambda x, t: gradcam.attribute(x, target=t)
        peers["captum_integrated_gradients_50"] = lambda x, t: ig.attribute(x, target=t, n_steps=50,
                                                                           internal_batch_size=50)
    except ImportError:
        notes["captum"] = "not installed (pip install captum): its rows are skipped"
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = GradCAM(model=model, target_layers=[layer_module])
        peers["pytorch_grad_cam"] = lambda x, t: cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
    except ImportError:
        notes["pytorch-grad-cam"] = "not installed (pip install grad-cam): its rows are skipped"
    return peers, notes


def ratios(models: list[str], reps: int, ig_reps: int, batches: tuple[int, ...] = (1, 32)) -> dict:
    import torch

    from saywhy.data.images import ImageDataset
    from saywhy.model.hooks import get_module

    torch.set_num_threads(1)
    out: dict = {"notes": {}}
    for name, session, files in _setups(models):
        model = session.model
        dataset = ImageDataset(files, session.preprocess)
        images = torch.stack([dataset[i][0] for i in range(len(files))])
        with torch.no_grad():  # not inference tensors: the peers differentiate with them
            targets = model(images).argmax(1)
        five = list(session.explainer.vocabulary_[:5])
        peers, notes = _peers(model, get_module(model, session.layers.feature_layer))
        out["notes"].update(notes)

        def ground5(x):
            explanations = session.explain(x)
            return [session.ground(e, five) for e in explanations]

        def ground5_image(x):
            return [g.image for g in ground5(x)]

        methods = {
            "explain_tensors": lambda x, t, f: session.explain(x),
            "explain_files": lambda x, t, f: session.explain(f),
            "explain_ground5": lambda x, t, f: ground5(x),
            "explain_ground5_image": lambda x, t, f: ground5_image(x),
            "explain_heatmaps5_one_call": lambda x, t, f: session.explain(x, heatmaps=five),
            **{k: (lambda fn: lambda x, t, f: fn(x, t))(fn) for k, fn in peers.items()
               if k != "captum_integrated_gradients_50"},
        }
        rows: dict = {}
        for batch in batches:
            x, t, f = images[:batch].contiguous(), targets[:batch], files[:batch]
            for fn in methods.values():  # warm-up: first calls allocate, build kernels, read headers
                fn(x, t, f)
            wall: dict[str, list[float]] = {k: [] for k in methods}
            cpu: dict[str, list[float]] = {k: [] for k in methods}
            bare: list[float] = []
            # CPU seconds of each method and of the bare forward beside it: min / min is the ratio least
            # disturbed by other processes (interference only ever adds time), reported beside the medians
            spent: dict[str, list[float]] = {k: [] for k in methods}
            spent_bare: dict[str, list[float]] = {k: [] for k in methods}
            todo = dict(methods)
            if "captum_integrated_gradients_50" in peers and batch == 1:
                todo["captum_integrated_gradients_50"] = lambda x, t, f: peers["captum_integrated_gradients_50"](x, t)
                wall["captum_integrated_gradients_50"], cpu["captum_integrated_gradients_50"] = [], []
                spent["captum_integrated_gradients_50"], spent_bare["captum_integrated_gradients_50"] = [], []
            for rep in range(reps):
                for key, fn in todo.items():  # each method next to its own bare forward: interleaved
                    if key == "captum_integrated_gradients_50" and rep >= ig_reps:
                        continue
                    base_wall, base_cpu = _timed(lambda: _bare(model, x))
                    used_wall, used_cpu = _timed(lambda: fn(x, t, f))
                    wall[key].append(used_wall / base_wall)
                    cpu[key].append(used_cpu / base_cpu)
                    spent[key].append(used_cpu)
                    spent_bare[key].append(base_cpu)
                    bare.append(base_wall)
            rows[f"batch_{batch}"] = {"bare_forward_ms": round(1000 * statistics.median(bare), 2),
                                      **{k: _median(v) for k, v in cpu.items()},
                                      "wall_clock": {k: _median(v) for k, v in wall.items()},
                                      "min_over_min": {k: round(min(spent[k]) / min(spent_bare[k]), 3)
                                                       for k in spent if spent[k]}}
            print(name, batch, rows[f"batch_{batch}"], flush=True)
        out[name] = {"image_size": int(images.shape[-1]), "repetitions": reps, **rows}
    return out


# ----- extraction -----------------------------------------------------------------------------
def extraction(n_images: int, reps: int, tuned: bool = True) -> dict:
    import torch

    from saywhy.data.images import ImageDataset
    from saywhy.model import activations
    from saywhy.model.checkpoint import checkpoint_preprocess, load_checkpoint
    from saywhy.model.layers import find_layers

    torch.set_num_threads(1)
    if tuned:
        activations.tune_cpu_allocator()
    model, meta = load_checkpoint(CUB_CKPT)
    preprocess = checkpoint_preprocess(meta)
    files = _cub_files(n_images)
    layers = find_layers(model, torch.zeros(1, 3, preprocess.image_size, preprocess.image_size))
    dataset = ImageDataset(files, preprocess)
    images = torch.stack([dataset[i][0] for i in range(len(files))])
    bare: dict[int, list[float]] = {b: [] for b in (8, 16, 32)}
    extract: list[float] = []
    for _ in range(reps):
        for b in bare:
            started = time.perf_counter()
            with torch.inference_mode():
                for i in range(0, len(images), b):
                    model(images[i:i + b])
            bare[b].append(len(images) / (time.perf_counter() - started))
        if tuned:
            started = time.perf_counter()
            activations.extract_activations(model, files, preprocess, layers, progress=False)
            extract.append(len(images) / (time.perf_counter() - started))
    result = {"images": len(files), "repetitions": reps, "allocator_tuned": tuned,
              **{f"bare_forward_batch_{b}_img_per_s": _median(v) for b, v in bare.items()}}
    if tuned:
        best = max(statistics.median(v) for v in bare.values())
        result.update({"extract_files_img_per_s": _median(extract),
                       "extract_batch_size": activations.default_batch_size(torch.device("cpu")),
                       "extract_over_best_bare": round(statistics.median(extract) / best, 3)})
    return result


# ----- the ablation's maps memo ---------------------------------------------------------------
def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def memo_child(kind: str, n_images: int, rows: int) -> dict:
    """What ``evaluate --ablation`` does with its memo: every row asks for the maps of the same
    chunks of 128 images (grounding_points); resident memory after each row."""
    import torch

    from saywhy.explain.explainer import Explainer
    from saywhy.model.checkpoint import load_checkpoint
    from saywhy.pipeline import ExplainerSession, SpilledMaps

    torch.set_num_threads(1)
    explainer = Explainer.load(CUB_EXP)
    model, _ = load_checkpoint(CUB_CKPT)
    memo = {} if kind == "dict" else SpilledMaps()
    session = ExplainerSession(explainer, model, map_memo=memo)
    files = _cub_files(n_images)
    import tracemalloc

    tracemalloc.start()  # numpy's allocations are traced: what the memo holds, whatever the allocator keeps
    out = {"rss_mb_start": _rss_mb(), "rss_mb_after_chunk": [], "rss_mb_after_row": [], "traced_mb_after_chunk": []}
    for row in range(rows):
        for start in range(0, len(files), 128):
            acts = session.activations(files[start:start + 128], keep_maps=True, strict=False)
            del acts
            if row == 0:
                out["rss_mb_after_chunk"].append(_rss_mb())
                out["traced_mb_after_chunk"].append(round(tracemalloc.get_traced_memory()[0] / 2**20, 1))
        out["rss_mb_after_row"].append(_rss_mb())
    chunks = out["traced_mb_after_chunk"]
    # traced (numpy) memory growth per 1,000 images after the first chunk; resident memory is recorded too, but
    # the tuned allocator keeps up to 1 GB of freed memory, so it shows the working set rather than the memo
    out["growth_mb_per_1000_images"] = round((chunks[-1] - chunks[0]) / max(1, len(files) - 128) * 1000, 1)
    return out


def ablation_memory(n_images: int) -> dict:
    result = {"images": n_images, "rows": 2, "chunk": 128}
    for kind in ("dict", "spilled"):
        child = subprocess.run([PYTHON, __file__, "--memo-child", kind, "--memo-images", str(n_images)], check=True,
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        result[kind] = json.loads(child.stdout.strip().splitlines()[-1])
        print("memo", kind, result[kind], flush=True)
    return result


# ----- fit and command (new processes) --------------------------------------------------------
def _run(argv: list[str], src: Path, home: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a child process; the CPU time suffers less from a loaded machine."""
    import resource

    env = {**os.environ, "PYTHONPATH": str(src), "SAYWHY_HOME": str(home), "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cold_fit(before: Path | None, reps: int = 1) -> dict:
    """Cold ``saywhy fit`` of the cub50 checkpoint, the trees interleaved ``reps`` times (before, after, before...):
    medians of wall and CPU seconds, every run listed."""
    # "after" is the default fit, part maps and (from stop 20) part-pooled evidence included (work the code
    # before issue 13 did not do); "after_global" the stop-19 default's work (part maps, global pooling, no
    # smoothing); "after_no_part_maps" (--no-part-maps) does the same work as "before"
    trees = ([("before", before / "src", [])] if before else []) + [
        ("after", REPO / "src", []),
        ("after_global", REPO / "src", ["--evidence-pooling", "global", "--evidence-smoothing", "0"]),
        ("after_no_part_maps", REPO / "src", ["--no-part-maps"])]
    runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _, _ in trees}
    for _ in range(reps):
        for label, src, extra in trees:
            with tempfile.TemporaryDirectory(prefix="saywhy-speed-") as tmp:
                home = Path(tmp) / "home"
                (home / "cache").mkdir(parents=True)
                shutil.copytree(BENCH_HOME / "cache" / "phrases", home / "cache" / "phrases")
                wall, cpu = _run([PYTHON, "-m", "saywhy", "--quiet", "fit", "--model", str(CUB_CKPT), "--root", str(CUB),
                                  "--out", str(Path(tmp) / "exp"), *extra], src, home)
            runs[label].append((round(wall, 1), round(cpu, 1), round(os.getloadavg()[0], 2)))
            print("fit", label, round(wall, 1), round(cpu, 1), flush=True)
    result: dict = {"reps": reps, "runs": {label: [dict(zip(("seconds", "cpu_seconds", "load_average"), r)) for r in rs]
                                           for label, rs in runs.items()}}
    for label, rs in runs.items():
        result[f"{label}_seconds"] = _median([r[0] for r in rs])
        result[f"{label}_cpu_seconds"] = _median([r[1] for r in rs])
        result[f"{label}_load_average"] = _median([r[2] for r in rs])
    if before:
        for label in ("after", "after_global", "after_no_part_maps"):
            suffix = label[len("after"):]
            result[f"speedup{suffix}"] = round(result["before_seconds"] / result[f"{label}_seconds"], 2)
            result[f"cpu_speedup{suffix}"] = round(result["before_cpu_seconds"] / result[f"{label}_cpu_seconds"], 2)
    return result


def one_image_command(before: Path | None, reps: int) -> dict:
    """A cache-hit one-image ``saywhy explain`` in a new process: wall and CPU seconds, medians, with the load.

    Rows: ``before`` (the code before issue 13, ``--before``), ``eager`` (this code, an explainer
    without the network record, so the network is built) and ``after`` (this code and an explainer
    that records its checkpoint: no network built), interleaved.
    """
    image = _cub_files(1)[0]
    result: dict = {"notes": {}}
    for model, explainer, eager in (("demo", DEMO_EXP, DEMO_EXP_EAGER), ("cub50", CUB_EXP, CUB_EXP_EAGER)):
        # the code before issue 13 reads explainer format 4 only: it runs on the eager explainer (the same checkpoint)
        rows = ([("before", before / "src", eager)] if before else []) + \
            [("eager", REPO / "src", eager), ("after", REPO / "src", explainer)]
        missing = [label for label, _, exp in rows if not (Path(exp) / "explainer.json").is_file()]
        if missing:  # an explainer this machine does not have: its rows are left out, and said so
            result["notes"][model] = f"rows {', '.join(missing)} skipped: no explainer at " + \
                ", ".join(sorted({str(exp) for label, _, exp in rows if label in missing}))
            rows = [row for row in rows if row[0] not in missing]
        if not rows:
            continue
        argv = {label: [PYTHON, "-m", "saywhy", "explain", image, "--explainer", str(exp)] for label, _, exp in rows}
        for label, src, _ in rows:  # warm: the feature cache holds the image, the files are in the page cache
            _run(argv[label], src, BENCH_HOME)
        times: dict[str, list[float]] = {label: [] for label, _, _ in rows}
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in rows}
        load: dict[str, list[float]] = {label: [] for label, _, _ in rows}
        for _ in range(reps):
            for label, src, _ in rows:
                wall, used = _run(argv[label], src, BENCH_HOME)
                times[label].append(wall)
                cpu[label].append(used)
                load[label].append(os.getloadavg()[0])
        result[model] = {**{f"{label}_seconds": _median(v) for label, v in times.items()},
                         **{f"{label}_cpu_seconds": _median(v) for label, v in cpu.items()},
                         **{f"{label}_load_average": _median(v) for label, v in load.items()}}
        print("command", model, result[model], flush=True)
    result["import_saywhy_cli"] = import_time(reps)
    print("import saywhy.cli", result["import_saywhy_cli"], flush=True)
    return result


def import_time(reps: int) -> dict:
    """``python -c "import saywhy.cli"`` in a new process: wall and CPU seconds, medians, with the load."""
    walls, cpus, loads = [], [], []
    for _ in range(reps):
        wall, used = _run([PYTHON, "-c", "import saywhy.cli"], REPO / "src", BENCH_HOME)
        walls.append(wall)
        cpus.append(used)
        loads.append(os.getloadavg()[0])
    return {"seconds": _median(walls), "cpu_seconds": _median(cpus), "load_average": _median(loads)}


ROWS = [("explain_tensors", "explain from tensors"),
        ("explain_files", "`ExplainerSession.explain(files)`, decoding included"),
        ("explain_ground5", "explain + `ground` of 5 attributes (public API, layer resolution)"),
        ("explain_ground5_image", "same, heatmaps upsampled to the input"),
        ("explain_heatmaps5_one_call", "`explain(x, heatmaps=[5 attributes])`, one call"),
        ("captum_layergradcam", "Captum LayerGradCam (target given)"),
        ("pytorch_grad_cam", "pytorch-grad-cam GradCAM"),
        ("captum_integrated_gradients_50", "Captum IntegratedGradients, 50 steps (batch 1)")]


def markdown(result: dict) -> str:
    """The ratio table of BENCHMARKS.md's Speed section."""
    ratios = result.get("ratios", {})
    models = [m for m in ("efficientnet_lite0_224", "demo_cnn_64", "resnet50_224") if m in ratios]
    lines = ["| batch 1 / batch 32 | " + " | ".join(models) + " |", "| --- |" + " --- |" * len(models)]
    for key, label in ROWS:
        cells = []
        for m in models:
            one, many = (ratios[m].get(b, {}).get(key) for b in ("batch_1", "batch_32"))
            cells.append(" / ".join("-" if v is None else f"{v:.2f}" for v in (one, many)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    bare = [" / ".join(f"{ratios[m][b]['bare_forward_ms']:.0f}" if b in ratios[m] else "-" for b in ("batch_1", "batch_32"))
            for m in models]
    lines.append("| (bare forward, ms) | " + " | ".join(bare) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="ratios,extraction,memo,fit,command")
    parser.add_argument("--models", default="efficientnet_lite0_224,demo_cnn_64,resnet50_224")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--fit-reps", type=int, default=1, help="interleaved repetitions of the cold fit (before, after)")
    parser.add_argument("--ig-reps", type=int, default=2)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--before", type=Path, help="a source tree of the code before issue 13, for fit and command")
    parser.add_argument("--untuned-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memo-child", choices=("dict", "spilled"), help=argparse.SUPPRESS)
    parser.add_argument("--memo-images", type=int, default=640)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--markdown", action="store_true", help="print the ratio table of --json and stop")
    args = parser.parse_args()
    if args.untuned_child:  # the bare forward with glibc's default allocator, in a process of its own
        print(json.dumps(extraction(96, args.reps, tuned=False)))
        return
    if args.markdown:
        print(markdown(json.loads(args.json.read_text())))
        return
    if args.memo_child:
        print(json.dumps(memo_child(args.memo_child, args.memo_images, 2)))
        return
    sections = args.sections.split(",")
    result = json.loads(args.json.read_text()) if args.json.is_file() else {}
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": 1,
                         "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    started = time.perf_counter()
    if "ratios" in sections:
        result["ratios"] = ratios(args.models.split(","), args.reps, args.ig_reps,
                                  tuple(int(b) for b in args.batches.split(",")))
    if "extraction" in sections:
        child = subprocess.run([PYTHON, __file__, "--untuned-child", "--reps", str(args.reps)], check=True,
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        result["extraction"] = {"tuned": extraction(96, args.reps), "default_allocator": json.loads(child.stdout)}
        print(result["extraction"], flush=True)
    if "memo" in sections:
        result["ablation_memo"] = ablation_memory(args.memo_images)
    if "fit" in sections:
        result["cold_fit_cub50"] = cold_fit(args.before, args.fit_reps)
    if "command" in sections:
        result["one_image_explain"] = one_image_command(args.before, args.reps)
    result["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
