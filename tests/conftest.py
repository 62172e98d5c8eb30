"""Shared fixtures: a tiny CUB-layout dataset written on the fly, and the real cub50 where present."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tests never write to the user's ./.saywhy: each test process (one per xdist worker) gets a
# workspace of its own, set before anything reads it (README and docstring examples included).
os.environ["SAYWHY_HOME"] = tempfile.mkdtemp(prefix="saywhy-test-home-")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one thread each, or they fight for the cores.
    import torch

    torch.set_num_threads(1)

# The real CUB subset lives in shared/ beside the repository on development machines and CI;
# SAYWHY_CUB50 points elsewhere. Users' machines have neither: those tests skip.
CUB50 = Path(os.environ.get("SAYWHY_CUB50", Path(__file__).resolve().parents[2] / "shared" / "data" / "cub50"))


def write_tiny_cub(root: Path, with_captions: bool = True) -> Path:
    """Two classes (ids 3 and 7, not contiguous), four images, one without a caption file."""
    cub = root / "CUB_200_2011"
    (cub / "parts").mkdir(parents=True)
    classes = {3: "003.Red_Bird", 7: "007.Blue_Bird"}
    images = {1: (3, "a_1.jpg", 1), 2: (3, "a_2.jpg", 0), 3: (7, "b_1.jpg", 1), 4: (7, "b_2.jpg", 0)}
    (cub / "classes.txt").write_text("".join(f"{k} {v}\n" for k, v in classes.items()))
    (cub / "images.txt").write_text("".join(f"{i} {classes[c]}/{f}\n" for i, (c, f, _) in images.items()))
    (cub / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, (c, _, _) in images.items()))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, (_, _, t) in images.items()))
    (cub / "bounding_boxes.txt").write_text("".join(f"{i} 2.0 3.0 20.0 18.0\n" for i in images) + "bad line\n")
    (cub / "parts" / "parts.txt").write_text("1 back\n2 beak\n")
    (cub / "parts" / "part_locs.txt").write_text("".join(f"{i} 1 5.0 6.0 1\n{i} 2 0.0 0.0 0\n" for i in images))
    for i, (c, f, _) in images.items():
        folder = cub / "images" / classes[c]
        folder.mkdir(parents=True, exist_ok=True)
        color = (200, 30, 30) if c == 3 else (30, 30, 200)
        Image.fromarray(np.full((32, 32, 3), color, np.uint8)).save(folder / f)
        if with_captions and i != 4:
            text = root / "text_c10" / classes[c]
            text.mkdir(parents=True, exist_ok=True)
            word = "red" if c == 3 else "blue"
            (text / f.replace(".jpg", ".txt")).write_text(f"this bird has a {word} crown.\na small {word} bird.\n")
    return root


@pytest.fixture
def tiny_cub(tmp_path: Path) -> Path:
    return write_tiny_cub(tmp_path)


@pytest.fixture
def cub50() -> Path:
    if not (CUB50 / "CUB_200_2011" / "images.txt").is_file():
        pytest.skip(f"real CUB subset not found at {CUB50} (only on development machines)")
    return CUB50


@pytest.fixture(scope="session")
def tiny_noisy_synthbirds(tmp_path_factory) -> dict:
    """96 drawn birds of 4 species, 10% flipped labels, a 1-epoch CNN at 32 px and its explainer.

    Built once per test session and shared by every test that needs a trained network and a
    fitted explainer (grounding, evaluate, debugging, gallery, search): tests must not change
    what it returns. Keys: ``base`` (a scratch folder), ``root`` (the synthbirds folder, its
    ``CUB_200_2011`` inside and ``synthbirds_truth.json`` beside it), ``dataset``, ``session``,
    ``extractor``, ``ckpt`` and ``exp`` (the checkpoint and explainer folders, for the CLI),
    ``home`` (a workspace for the CLI's ``--home`` whose phrase cache already holds every
    caption, so a CLI run does not parse them again).
    """
    from saywhy.data.cub import read_cub
    from saywhy.data.images import Preprocess
    from saywhy.data.synthbirds import SynthConfig, generate
    from saywhy.explain.explainer import ExplainerConfig
    from saywhy.model.checkpoint import build_model, save_checkpoint
    from saywhy.model.train import TrainConfig, train_classifier
    from saywhy.pipeline import ExplainerSession, fit_explainer
    from saywhy.text.phrases import PhraseExtractor
    from saywhy.workspace import Workspace

    base = tmp_path_factory.mktemp("tiny_noisy_synthbirds")
    root = generate(base / "birds", SynthConfig(n_images=96, image_size=64, n_species=4, label_noise=0.1),
                    workers=1, progress=False)
    dataset = read_cub(root)
    preprocess = Preprocess(image_size=32)
    model = build_model("saywhy:smallcnn", len(dataset.class_ids))
    train_classifier(model, dataset, preprocess, TrainConfig(epochs=1), progress=False)
    ckpt = save_checkpoint(base / "ckpt", model, {"arch": "saywhy:smallcnn", "arch_kwargs": {},
                                                  "classes": [dataset.class_names[c] for c in dataset.class_ids],
                                                  "preprocess": preprocess.to_dict()})
    home = base / "home"
    extractor = PhraseExtractor(cache_dir=Workspace(home).phrase_cache)
    # global pooling: one forward pass per image without the maps, no part maps attached (tests of the
    # default part-pooled fit fit their own: test_part_pooling.py, test_default_pooling.py)
    explainer, _ = fit_explainer(dataset, model, preprocess, ExplainerConfig(min_df=1, evidence_pooling="global"),
                                 extractor=extractor, progress=False, metadata={"checkpoint": str(ckpt)})
    explainer.save(base / "exp")
    return {"base": base, "root": root, "dataset": dataset, "session": ExplainerSession(explainer, model),
            "extractor": extractor, "exp": base / "exp", "ckpt": ckpt, "home": home}
