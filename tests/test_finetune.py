"""``saywhy train --finetune``: the last stages of a pretrained network trained on cached lower stages."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from saywhy.data.cub import read_cub
from saywhy.data.images import ImageDataset, Preprocess
from saywhy.errors import SaywhyError
from saywhy.model.checkpoint import build_model, load_checkpoint
from saywhy.model.feature_cache import FeatureCache

timm = pytest.importorskip("timm")
from saywhy.model.finetune import (  # noqa: E402 - after the timm check
    FinetuneConfig,
    finetune,
    finetune_top,
    frozen_outputs,
    split_network,
)

PRE = Preprocess(image_size=32)
COLORS = [(220, 40, 40), (40, 40, 220), (40, 200, 40), (220, 220, 40)]


def _write_squares(root: Path, per_class: int = 8) -> Path:
    """Four classes of coloured squares (left half darker, so that a flip changes the input), 3/4 training."""
    cub = root / "CUB_200_2011"
    (cub / "parts").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, n = [], 0
    for c, color in enumerate(COLORS, start=1):
        folder = cub / "images" / f"{c:03d}.C{c}"
        folder.mkdir(parents=True)
        for j in range(per_class):
            n += 1
            pixels = np.clip(np.array(color) + rng.normal(0, 25, (32, 32, 3)), 0, 255)
            pixels[:, :12] *= 0.4
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"i{n}.png")
            images.append((n, c, f"{c:03d}.C{c}/i{n}.png", int(j < per_class * 3 // 4)))
    (cub / "classes.txt").write_text("".join(f"{c} {c:03d}.C{c}\n" for c in range(1, 5)))
    (cub / "images.txt").write_text("".join(f"{i} {p}\n" for i, _, p, _ in images))
    (cub / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c, _, _ in images))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in images))
    (cub / "bounding_boxes.txt").write_text("".join(f"{i} 0.0 0.0 32.0 32.0\n" for i, *_ in images))
    (cub / "parts" / "parts.txt").write_text("1 crown\n")
    (cub / "parts" / "part_locs.txt").write_text("".join(f"{i} 1 16.0 16.0 1\n" for i, *_ in images))
    for i, c, path, _ in images:
        text = root / "text_c10" / path.rsplit(".", 1)[0]
        text.parent.mkdir(parents=True, exist_ok=True)
        word = ["red", "blue", "green", "yellow"][c - 1]
        text.with_suffix(".txt").write_text(f"this bird has a {word} crown.\na {word} bird with a {word} wing.\n")
    return root


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: on the busy 2-core test machine a second thread only adds waiting (3-10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def squares(tmp_path: Path) -> Path:
    return _write_squares(tmp_path / "squares")


def _net(seed: int = 0, n_classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("timm:test_efficientnet", n_classes).eval()


def _config(**changes) -> FinetuneConfig:
    return FinetuneConfig(**{"max_epochs": 6, "patience": 6, "lr": 3e-3, "batch_size": 8, "validation_fraction": 0.25,
                             **changes})


def test_frozen_layers_keep_every_bit_and_the_trained_stages_change(squares, tmp_path):
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = finetune(model, read_cub(squares), PRE, FeatureCache(tmp_path / "f"), _config(), progress=False)
    after = model.state_dict()
    trained = tuple(f"{m}." for m in report["training"]["trained_modules"])
    assert report["training"]["trained_modules"] == ["blocks.4", "conv_head", "bn2", "classifier"]
    assert report["training"]["best_epoch"] > 0  # else the trained stages are the pretrained ones by design
    frozen = [k for k in before if not k.startswith(trained)]
    assert len(frozen) > 50 and all(torch.equal(before[k], after[k]) for k in frozen)
    changed = [k for k in before if k.startswith(("blocks.4.", "conv_head.")) and k.endswith("weight")
               and not torch.equal(before[k], after[k])]
    assert len(changed) >= 4
    # BatchNorm stays in eval mode: no running statistic moved, in the trained stages either
    stats = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)


def test_the_kept_epoch_is_the_best_held_out_one_and_training_stops_after_patience(squares, tmp_path):
    model = _net(seed=1)
    report = finetune(model, read_cub(squares), PRE, None, _config(max_epochs=25, patience=2), progress=False)
    training = report["training"]
    history = training["history"]
    best = max(history, key=lambda h: (h["held_out_accuracy"], -h["held_out_loss"]))
    assert training["best_epoch"] == best["epoch"] and training["held_out_accuracy"] == best["held_out_accuracy"]
    assert training["epochs_run"] == min(25, training["best_epoch"] + 2)
    # the model returned is that epoch's: its held-out loss, recomputed, is the one recorded
    dataset = read_cub(squares)
    records = dataset.split(True)
    from saywhy.model.linear_probe import stratified_split

    labels = np.array([dataset.class_ids.index(r.class_id) for r in records])
    _, held = stratified_split(labels, 0.25, 0)
    x = torch.stack([ImageDataset([records[i] for i in held], PRE)[j][0] for j in range(len(held))])
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(labels[held])).item()
    assert loss == pytest.approx(training["held_out_loss"], rel=1e-4)


def test_frozen_layers_run_once_per_image_and_flip_then_come_from_the_cache(squares, tmp_path):
    dataset = read_cub(squares)
    n_train, n_test = len(dataset.split(True)), len(dataset.split(False))
    seen = []

    def count(model):
        model.conv_stem.register_forward_hook(lambda m, inputs, out: seen.append(len(inputs[0])))
        return model

    first = finetune(count(_net()), dataset, PRE, FeatureCache(tmp_path / "f"), _config(max_epochs=2), progress=False)
    # a probe of the output shape per split, each training image and its flip, each test image, two end-to-end checks
    assert sum(seen) == 2 + 2 * n_train + n_test + 2 and first["features_computed"] == n_train + n_test
    seen.clear()
    second = finetune(count(_net()), dataset, PRE, FeatureCache(tmp_path / "f"), _config(max_epochs=2), progress=False)
    assert sum(seen) == 2 + 2 and (second["features_computed"], second["features_cached"]) == (0, n_train + n_test)
    assert second["training"]["history"] == first["training"]["history"]  # the same maps, the same seeded run


def test_flipped_maps_are_those_of_the_mirrored_image(squares):
    records = read_cub(squares).split(True)[:3]
    split = split_network(_net(), 2)
    got = frozen_outputs(split, records, PRE, None, flips=True, batch_size=2, progress=False)
    x = torch.stack([ImageDataset(records, PRE)[j][0] for j in range(3)])
    with torch.no_grad():
        upright, mirrored = split.bottom(x), split.bottom(torch.flip(x, dims=[3]))
    torch.testing.assert_close(got.maps, upright)
    torch.testing.assert_close(got.flipped, mirrored)
    assert (got.maps - got.flipped).abs().max() > 1e-3  # the squares are not symmetric: a flip is a new input


def test_top_on_cached_maps_is_the_whole_network():
    model = _net()
    x = torch.randn(2, 3, 32, 32)
    for stages in (1, 2, 3):
        split = split_network(model, stages)
        with torch.no_grad():
            torch.testing.assert_close(split.logits(split.bottom(x)), model(x))


def test_unsplittable_networks_and_stage_counts_are_refused_in_one_line():
    with pytest.raises(SaywhyError, match="--finetune-stages must be between 1 and 4"):
        split_network(_net(), 5)
    with pytest.raises(SaywhyError, match="EfficientNet-style"):
        split_network(build_model("saywhy:smallcnn", 3), 1)


def test_a_class_of_one_image_leaves_nothing_to_hold_out(squares):
    split = split_network(_net(), 1)
    records = read_cub(squares).split(True)[:1]
    train = frozen_outputs(split, records, PRE, None, flips=True, progress=False)
    with pytest.raises(SaywhyError, match="hold one out"):
        finetune_top(split, train, np.array([0]), 4, _config(), progress=False)


def test_saywhy_train_finetune_writes_a_checkpoint_saywhy_fit_reads(squares, tmp_path, capsys):
    from saywhy.cli import main

    torch.manual_seed(0)
    weights = tmp_path / "imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("timm:test_efficientnet", 1000).state_dict().items()}, weights)
    ckpt, home = tmp_path / "ckpt", tmp_path / "home"
    common = ["--home", str(home), "--quiet"]
    assert main(["train", *common, "--dataset", "cub", "--root", str(squares), "--arch", "timm:test_efficientnet",
                 "--weights", str(weights), "--image-size", "32", "--finetune", "--finetune-epochs", "3",
                 "--out", str(ckpt)]) == 0
    assert "fine-tuned from blocks.4 up, best held-out epoch" in capsys.readouterr().out
    model, meta = load_checkpoint(ckpt)
    assert meta["finetuned"] is True and meta["training"]["stages"] == 1 and meta["training"]["config"]["max_epochs"] == 3
    assert meta["arch"] == "timm:test_efficientnet" and meta["classes"] == ["001.C1", "002.C2", "003.C3", "004.C4"]
    assert main(["fit", *common, "--model", str(ckpt), "--root", str(squares), "--out", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp").is_dir()
    # the existing refusals: an existing checkpoint is not overwritten; --finetune needs a pretrained network
    assert main(["train", *common, "--root", str(squares), "--finetune", "--out", str(tmp_path / "other")]) != 0
    assert "--finetune trains the last stages of a pretrained network" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
