"""The embedded default: the shipped weights are the ones `make demo` uses, and it never trains when they fit."""
from __future__ import annotations

import pytest

from saywhy import demo
from saywhy.data.images import Preprocess
from saywhy.data.synthbirds import SynthConfig
from saywhy.model.checkpoint import load_checkpoint, weights_digest
from saywhy.workspace import Workspace


def test_the_shipped_weights_are_for_the_demos_own_synthbirds():
    folder = demo._shipped_model_folder()
    assert folder is not None, "src/saywhy/weights/synthbirds_smallcnn is missing from the package"
    model, meta = load_checkpoint(folder)
    assert meta["dataset_fingerprint"] == SynthConfig().fingerprint()
    assert meta["arch"] == demo.DEMO_ARCH and meta["arch_kwargs"] == demo.DEMO_ARCH_KWARGS
    assert Preprocess.from_dict(meta["preprocess"]) == demo.DEMO_PREPROCESS
    assert meta["weights_digest"] == weights_digest(model)
    assert meta["test_accuracy"] >= 0.95


def test_matching_shipped_weights_are_used_without_training(tiny_noisy_synthbirds, tmp_path, monkeypatch):
    tiny = tiny_noisy_synthbirds
    shipped, _ = load_checkpoint(tiny["ckpt"])
    monkeypatch.setattr(demo, "_shipped_model_folder", lambda: tiny["ckpt"])
    monkeypatch.setattr(demo, "load_checkpoint", _with_fingerprint(load_checkpoint, tiny["ckpt"], "fp-tiny"))
    monkeypatch.setattr(demo, "train_demo_model", _fail)
    model, meta, folder = demo.ensure_demo_model(Workspace(tmp_path), tiny["dataset"], "fp-tiny", progress=False)
    assert weights_digest(model) == weights_digest(shipped) and folder.parent == Workspace(tmp_path).model("x").parent


def test_other_data_trains_instead_of_using_the_shipped_weights(tiny_noisy_synthbirds, tmp_path, monkeypatch):
    tiny = tiny_noisy_synthbirds
    monkeypatch.setattr(demo, "_shipped_model_folder", lambda: tiny["ckpt"])
    monkeypatch.setattr(demo, "load_checkpoint", _with_fingerprint(load_checkpoint, tiny["ckpt"], "fp-tiny"))
    trained = []

    def train(dataset, fingerprint, out, **kwargs):
        import shutil

        trained.append(fingerprint)
        shutil.copytree(tiny["ckpt"], out)

    monkeypatch.setattr(demo, "train_demo_model", train)
    demo.ensure_demo_model(Workspace(tmp_path), tiny["dataset"], "fp-other", progress=False)
    assert trained == ["fp-other"]


def _with_fingerprint(load, folder, fp):
    def patched(path, *args, **kwargs):
        model, meta = load(path, *args, **kwargs)
        return model, {**meta, "dataset_fingerprint": fp, "arch_kwargs": demo.DEMO_ARCH_KWARGS}
    return patched


def _fail(*args, **kwargs):
    pytest.fail("the demo trained although the shipped weights fit its data")
