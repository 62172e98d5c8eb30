"""Writing a synthbirds dataset to disk in the CUB-200-2011 layout, plus its ground truth.

The main process plans every image (species, label, split, file name); workers draw
and write images and captions, each from its own seed derived from (seed, image
id), so the output does not depend on how the work is split. Metadata is written
last and the folder renamed into place, so an interrupted run leaves nothing.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from saywhy.data.synthbirds.captions import write_captions, synonyms
from saywhy.data.synthbirds.config import GENERATOR_VERSION, SynthConfig
from saywhy.data.synthbirds.draw import draw_bird
from saywhy.data.synthbirds.species import COLOURS, Species, confusable_pairs, species_templates
from saywhy.errors import SaywhyError

CUB_PARTS = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
             "nape", "right eye", "right leg", "right wing", "tail", "throat")
FINGERPRINT_FILE = ".synthbirds_fingerprint"
TRUTH_FILE = "synthbirds_truth.json"
JPEG_QUALITY = 90


@dataclass(frozen=True)
class ImagePlan:
    """One image to draw. ``label`` differs from ``species_id`` where the label was flipped."""

    image_id: int
    species_id: int
    label: int
    is_train: bool
    relpath: str  # "<class dir>/<file>.jpg", under the label's folder as in CUB


def plan_images(config: SynthConfig, species: dict[int, Species]) -> list[ImagePlan]:
    """Species, split and label of every image; classes as balanced as ``n_images`` allows."""
    rng = np.random.default_rng([config.seed, 0])
    ids = sorted(species)
    counts = {s: config.n_images // len(ids) + (k < config.n_images % len(ids)) for k, s in enumerate(ids)}
    tests = _stratified_test_counts(counts, config.train_fraction, rng)
    species_of, train_of = [], []
    for s in ids:
        is_test = np.zeros(counts[s], dtype=bool)
        is_test[rng.permutation(counts[s])[: tests[s]]] = True
        species_of += [s] * counts[s]
        train_of += [not t for t in is_test]
    labels = list(species_of)
    for i in rng.choice(config.n_images, size=round(config.n_images * config.label_noise), replace=False):
        others = [s for s in ids if s != species_of[i]]
        labels[i] = others[int(rng.integers(len(others)))]
    plans = []
    for i, (s, label, train) in enumerate(zip(species_of, labels, train_of)):
        image_id = i + 1
        folder = species[label].dir_name(label)
        plans.append(ImagePlan(image_id, s, label, train, f"{folder}/{folder.split('.', 1)[1]}_{image_id:04d}.jpg"))
    return plans


def _stratified_test_counts(counts: dict[int, int], train_fraction: float, rng: np.random.Generator) -> dict[int, int]:
    """Test images per class: proportional, summing to the overall test share (largest remainder)."""
    total = round(sum(counts.values()) * (1 - train_fraction))
    quota = {s: n * (1 - train_fraction) for s, n in counts.items()}
    tests = {s: int(q) for s, q in quota.items()}
    order = sorted(counts, key=lambda s: (-(quota[s] - tests[s]), rng.random()))
    for s in order[: total - sum(tests.values())]:
        tests[s] += 1
    return tests


def _render(job: tuple[ImagePlan, Species, SynthConfig, str]) -> dict:
    """Draw one image and write it with its captions; return its metadata. Runs in a worker."""
    plan, species, config, root = job
    rng = np.random.default_rng([config.seed, 1, plan.image_id])
    plumage = species.draw_plumage(rng)
    bird = draw_bird(plumage, rng, config.image_size)
    attributes = list(plumage.attributes())
    captions = write_captions(attributes, rng, config.captions_per_image, config.caption_noise)
    image_path = Path(root, "CUB_200_2011", "images", plan.relpath)
    bird.image.save(image_path, "JPEG", quality=JPEG_QUALITY)
    text_path = Path(root, "text_c10", plan.relpath).with_suffix(".txt")
    text_path.write_text("\n".join(captions) + "\n", encoding="utf-8")
    return {"image_id": plan.image_id, "bbox": bird.bbox, "keypoints": bird.keypoints, "attributes": attributes}


def generate(root: str | Path, config: SynthConfig = SynthConfig(), workers: int | None = None,
             progress: bool = True) -> Path:
    """Write a synthbirds dataset under ``root`` and return ``root``; reuse it if already there.

    ``root`` gets ``CUB_200_2011/`` (CUB's files, images and parts), ``text_c10/``
    (10 captions per image) and ``synthbirds_truth.json``. A folder generated with the
    same config is returned as is; any other non-empty folder is refused.

    >>> root = generate("/tmp/synthbirds_doc", SynthConfig(n_images=24, image_size=64), workers=1, progress=False)
    >>> sorted(p.name for p in root.iterdir())
    ['.synthbirds_fingerprint', 'CUB_200_2011', 'synthbirds_truth.json', 'text_c10']
    """
    root = Path(root).expanduser()
    if _existing_matches(root, config):
        return root
    species = species_templates(config.n_species)
    plans = plan_images(config, species)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is meant to be shared
    try:
        for s in species:
            for top in ("CUB_200_2011/images", "text_c10"):
                (tmp / top / species[s].dir_name(s)).mkdir(parents=True)
        (tmp / "CUB_200_2011" / "parts").mkdir()
        jobs = [(p, species[p.species_id], config, str(tmp)) for p in plans]
        results = _render_all(jobs, workers, progress)
        _write_cub_files(tmp / "CUB_200_2011", species, plans, results)
        _write_truth(tmp / TRUTH_FILE, config, species, plans, results)
        (tmp / FINGERPRINT_FILE).write_text(config.fingerprint() + "\n")
        _move_into_place(tmp, root, config)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _render_all(jobs: list, workers: int, progress: bool) -> list[dict]:
    """Every job rendered, in ``workers`` processes when more than one; results in id order.

    The pool is closed (its workers ended) before an error propagates, so the caller
    can delete the half-written folder without a worker still writing into it.
    """
    results = []
    with tqdm(total=len(jobs), desc="synthbirds", unit="img", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                results.append(_render(job))
                bar.update()
        else:
            with multiprocessing.Pool(workers) as pool:
                for result in pool.imap_unordered(_render, jobs, chunksize=16):
                    results.append(result)
                    bar.update()
    return sorted(results, key=lambda r: r["image_id"])


def _existing_matches(root: Path, config: SynthConfig) -> bool:
    """True for a cache hit; raises where ``root`` holds something else; False where it is free."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise SaywhyError(f"{root} is a file, not a folder: pass another --root for synthbirds")
    marker = root / FINGERPRINT_FILE
    if marker.is_file():
        found = marker.read_text().strip()
        if found == config.fingerprint():
            return True
        raise SaywhyError(
            f"{root} holds synthbirds generated with other settings (fingerprint {found}, "
            f"wanted {config.fingerprint()}): delete it or choose another root"
        )
    if any(root.iterdir()):
        raise SaywhyError(f"{root} is not empty and is no synthbirds dataset: choose an empty or new folder")
    return False


def _move_into_place(tmp: Path, root: Path, config: SynthConfig) -> None:
    if root.is_dir():
        root.rmdir()  # an empty folder, checked by _existing_matches
    try:
        tmp.rename(root)
    except OSError:
        # Another process finished the same dataset first: keep theirs if it matches.
        if _existing_matches(root, config):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        raise


def _write_lines(path: Path, lines) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _write_cub_files(cub: Path, species: dict[int, Species], plans: list[ImagePlan], results: list[dict]) -> None:
    _write_lines(cub / "images.txt", (f"{p.image_id} {p.relpath}" for p in plans))
    _write_lines(cub / "classes.txt", (f"{s} {species[s].dir_name(s)}" for s in sorted(species)))
    _write_lines(cub / "image_class_labels.txt", (f"{p.image_id} {p.label}" for p in plans))
    _write_lines(cub / "train_test_split.txt", (f"{p.image_id} {int(p.is_train)}" for p in plans))
    _write_lines(cub / "bounding_boxes.txt",
                 (f"{r['image_id']} " + " ".join(f"{v:.1f}" for v in r["bbox"]) for r in results))
    _write_lines(cub / "parts" / "parts.txt", (f"{k} {name}" for k, name in enumerate(CUB_PARTS, start=1)))
    _write_lines(cub / "parts" / "part_locs.txt", (
        f"{r['image_id']} {k} {x:.1f} {y:.1f} {int(visible)}"
        for r in results
        for k, (x, y, visible) in enumerate((r["keypoints"][name] for name in CUB_PARTS), start=1)
    ))


def _write_truth(path: Path, config: SynthConfig, species: dict[int, Species], plans: list[ImagePlan],
                 results: list[dict]) -> None:
    truth = {
        "generator_version": GENERATOR_VERSION,
        "fingerprint": config.fingerprint(),
        "config": asdict(config),
        "colours": list(COLOURS),
        "species": {
            str(s): {"name": sp.dir_name(s), "attributes": list(sp.plumage.attributes()),
                     "optional_attributes": list(sp.optional_attributes())}
            for s, sp in sorted(species.items())
        },
        "images": {
            str(p.image_id): {"species": p.species_id, "label": p.label, "attributes": r["attributes"]}
            for p, r in zip(plans, results)
        },
        "confusable_pairs": confusable_pairs(species),
        "synonyms": synonyms(),
        "noisy_labels": [p.image_id for p in plans if p.label != p.species_id],
    }
    path.write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")


def load_truth(root: str | Path) -> dict:
    """The ground truth of a synthbirds folder, with species and image ids as int keys.

    >>> truth = load_truth(generate("/tmp/synthbirds_doc", SynthConfig(n_images=24, image_size=64), workers=1,
    ...                             progress=False))
    >>> truth["images"][1]["species"]
    1
    """
    path = Path(root).expanduser() / TRUTH_FILE
    if not path.is_file():
        raise SaywhyError(f"{path} not found: {root} is no synthbirds folder; create one with synthbirds.generate")
    truth = json.loads(path.read_text(encoding="utf-8"))
    for key in ("species", "images"):
        truth[key] = {int(k): v for k, v in truth[key].items()}
    # Synonym entries added since the folder was written (they do not change the data).
    truth["synonyms"] = {**synonyms(), **truth.get("synonyms", {})}
    return truth
