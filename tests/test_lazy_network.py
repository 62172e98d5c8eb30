"""A session over a checkpoint builds the network only when a forward pass needs it (issue 13).

The explainer records at fit what its checkpoint is (recipe, weights-file SHA-256, weights
digest, layers, backbone digest); a session over a folder that still matches explains cached
images from the cached features and the explainer's head, and any other folder is loaded and
checked as before.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import saywhy.model.checkpoint as checkpoint
import saywhy.model.lazy_network as lazy_network
from saywhy.data.cub import read_cub
from saywhy.data.images import Preprocess
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig
from saywhy.model.checkpoint import build_model, checkpoint_metadata, load_checkpoint, save_checkpoint
from saywhy.model.feature_cache import FeatureCache
from saywhy.model.lazy_network import LazyNetwork
from saywhy.pipeline import ExplainerSession, fit_explainer
from saywhy.text.phrases import PhraseExtractor


@pytest.fixture
def fitted(tiny_cub: Path, tmp_path: Path) -> dict:
    """A small CNN checkpoint, an explainer fitted on it as loaded from disk, and a warm feature cache."""
    dataset, preprocess = read_cub(tiny_cub), Preprocess(image_size=16)
    torch.manual_seed(0)
    model = build_model("saywhy:smallcnn", 2)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, checkpoint_metadata(
        "saywhy:smallcnn", [dataset.class_names[c] for c in dataset.class_ids], preprocess))
    loaded, _ = load_checkpoint(ckpt)
    cache = FeatureCache(tmp_path / "features")
    explainer, _ = fit_explainer(dataset, loaded, preprocess, ExplainerConfig(min_df=1, attribute_model="cooccurrence"),
                                 extractor=PhraseExtractor(cache_dir=tmp_path / "phrases"), progress=False,
                                 feature_cache=cache, metadata={"checkpoint": str(ckpt)})
    explainer.save(tmp_path / "exp")
    images = [r.path for r in dataset.records]
    return {"ckpt": ckpt, "exp": tmp_path / "exp", "cache": cache, "images": images, "tmp": tmp_path}


@pytest.fixture
def builds(monkeypatch) -> list:
    """Every build_model call from now on (the module that imports timm/torchvision for those families)."""
    calls: list = []
    real = checkpoint.build_model
    monkeypatch.setattr(checkpoint, "build_model", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls


def _session(fitted: dict, explainer: Explainer | None = None) -> ExplainerSession:
    return ExplainerSession.from_checkpoint(explainer or Explainer.load(fitted["exp"]), fitted["ckpt"],
                                            feature_cache=FeatureCache(fitted["cache"].folder))


def test_the_explainer_records_the_checkpoint_it_was_fitted_on(fitted):
    record = Explainer.load(fitted["exp"]).metadata_["network"]
    assert record["checkpoint"]["recipe"]["arch"] == "saywhy:smallcnn"
    assert record["checkpoint"]["recipe"]["n_classes"] == 2
    assert record["checkpoint"]["weights_digest"] == json.loads((fitted["ckpt"] / "model.json").read_text())["weights_digest"]
    assert record["layers"]["feature_layer"] == "features" and record["probe_size"] == 16


def test_a_cache_hit_explain_builds_no_network_and_equals_the_eager_path(fitted, builds):
    explainer = Explainer.load(fitted["exp"])
    lazy = _session(fitted, explainer)
    got = lazy.explain(fitted["images"])
    acts = lazy.activations(fitted["images"])
    assert builds == [] and isinstance(lazy._network, LazyNetwork) and not lazy._network.built
    eager = ExplainerSession(explainer, load_checkpoint(fitted["ckpt"])[0], feature_cache=FeatureCache(fitted["cache"].folder))
    assert builds == ["saywhy:smallcnn"]
    assert eager.layers == lazy.layers
    expected = eager.explain(fitted["images"])
    assert [e.to_dict() for e in got] == [e.to_dict() for e in expected]
    np.testing.assert_array_equal(acts.logits, eager.activations(fitted["images"]).logits)


def test_a_cache_miss_builds_the_network_once(fitted, builds):
    session = _session(fitted)
    new = []
    for i, color in enumerate([(10, 200, 10), (200, 200, 10)]):
        path = fitted["tmp"] / f"new_{i}.png"
        from PIL import Image

        Image.fromarray(np.full((20, 20, 3), color, np.uint8)).save(path)
        new.append(path)
    session.explain([new[0]])
    assert builds == ["saywhy:smallcnn"] and session._network.built
    session.explain([new[1]])
    session.ground(new[1], [session.explainer.vocabulary_[0]])  # maps: a forward, on the network built already
    assert builds == ["saywhy:smallcnn"]
    eager = ExplainerSession(session.explainer, load_checkpoint(fitted["ckpt"])[0],
                             feature_cache=FeatureCache(fitted["cache"].folder))  # the rows the lazy session wrote
    assert [e.to_dict() for e in session.explain(new)] == [e.to_dict() for e in eager.explain(new)]


def test_other_tensors_under_the_same_names_are_refused_in_one_line(fitted, builds):
    weights = fitted["ckpt"] / "model.safetensors"
    state = load_file(weights)
    save_file({k: (v + 0.5 if v.is_floating_point() else v) for k, v in state.items()}, weights)
    with pytest.raises(SaywhyError) as refused:
        _session(fitted)
    message = str(refused.value)
    assert "\n" not in message and "does not match the weights digest" in message


def test_another_valid_checkpoint_in_the_folder_is_refused_as_another_network(fitted, builds):
    meta = json.loads((fitted["ckpt"] / "model.json").read_text())
    torch.manual_seed(1)
    save_checkpoint(fitted["ckpt"], build_model("saywhy:smallcnn", 2), {k: v for k, v in meta.items() if k != "weights_digest"})
    with pytest.raises(SaywhyError, match="fitted on another network's weights"):
        _session(fitted)


def test_a_checkpoint_replaced_after_opening_is_refused_when_the_network_is_built(fitted, builds, tmp_path):
    session = _session(fitted)
    meta = json.loads((fitted["ckpt"] / "model.json").read_text())
    torch.manual_seed(2)
    save_checkpoint(fitted["ckpt"], build_model("saywhy:smallcnn", 2), {k: v for k, v in meta.items() if k != "weights_digest"})
    assert session.explain(fitted["images"][:1])  # cached: no network needed
    from PIL import Image

    Image.fromarray(np.full((20, 20, 3), (1, 2, 3), np.uint8)).save(tmp_path / "other.png")
    with pytest.raises(SaywhyError, match="changed after it was opened"):
        session.explain([tmp_path / "other.png"])


def test_an_explainer_without_the_record_takes_the_eager_path(fitted, builds):
    explainer = Explainer.load(fitted["exp"])
    explainer.metadata_.pop("network")  # as every explainer written before
    session = _session(fitted, explainer)
    assert builds == ["saywhy:smallcnn"] and not isinstance(session._network, LazyNetwork)
    lazy = _session(fitted)
    assert [e.to_dict() for e in session.explain(fitted["images"])] == \
        [e.to_dict() for e in lazy.explain(fitted["images"])]


def test_other_software_or_arguments_take_the_eager_path(fitted, builds, monkeypatch):
    real = lazy_network.build_recipe
    monkeypatch.setattr(lazy_network, "build_recipe",
                        lambda meta: {**real(meta), "software": {**real(meta)["software"], "torch": "0.0"}})
    assert not isinstance(_session(fitted)._network, LazyNetwork) and builds == ["saywhy:smallcnn"]
    monkeypatch.setattr(lazy_network, "build_recipe", real)
    meta = json.loads((fitted["ckpt"] / "model.json").read_text())
    (fitted["ckpt"] / "model.json").write_text(json.dumps({**meta, "arch_kwargs": {"pools": 3}}))
    session = _session(fitted)  # the default written out: another recipe, the same module, so accepted once built
    assert not isinstance(session._network, LazyNetwork) and builds == ["saywhy:smallcnn"] * 2
    (fitted["ckpt"] / "model.json").write_text(json.dumps({**meta, "arch_kwargs": {"pools": 2}}))
    with pytest.raises(SaywhyError):  # another structure: refused as before
        _session(fitted)
    assert builds == ["saywhy:smallcnn"] * 3


def test_a_network_not_loaded_from_a_checkpoint_records_nothing(tiny_cub, tmp_path):
    dataset, preprocess = read_cub(tiny_cub), Preprocess(image_size=16)
    model = build_model("saywhy:smallcnn", 2)
    explainer, _ = fit_explainer(dataset, model, preprocess, ExplainerConfig(min_df=1, attribute_model="cooccurrence"),
                                 extractor=PhraseExtractor(cache_dir=tmp_path / "phrases"), progress=False)
    assert "network" not in explainer.metadata_
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "ckpt", model, checkpoint_metadata(
        "saywhy:smallcnn", ["a", "b"], preprocess)))
    with torch.no_grad():
        loaded.fc.weight.add_(1.0)  # changed after loading: no longer the checkpoint's network
    assert checkpoint.checkpoint_identity(loaded) is None


def test_the_cli_explains_a_cached_image_without_building_the_network(fitted, builds, capsys):
    from saywhy.cli import main

    home = fitted["tmp"] / "home"
    shutil.copytree(fitted["cache"].folder, home / "cache" / "features")
    image = str(fitted["images"][0])
    assert main(["--home", str(home), "explain", image, "--explainer", str(fitted["exp"])]) == 0
    assert builds == [] and capsys.readouterr().out.startswith(f"{image}: This is a")


def test_a_cache_hit_cli_explain_never_imports_torch(fitted):
    """The one-image command served from the feature cache imports neither torch nor timm (a second or more each)."""
    import subprocess
    import sys

    home = fitted["tmp"] / "home"
    shutil.copytree(fitted["cache"].folder, home / "cache" / "features")
    image = str(fitted["images"][0])
    probe = ("import sys; from saywhy.cli import main; "
             f"status = main(['--home', {str(home)!r}, 'explain', {image!r}, '--explainer', {str(fitted['exp'])!r}]); "
             "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', 'TIMM' if 'timm' in sys.modules else 'NO-TIMM'); "
             "sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{image}: This is a") and done.stdout.strip().endswith("NO-TORCH NO-TIMM"), done.stdout
    from PIL import Image

    missed = str(fitted["tmp"] / "unseen.png")  # pixels the cache has not seen: the network is built, torch imported
    with Image.open(image) as opened:
        opened.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(missed)
    probe = probe.replace(repr(image), repr(missed))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("TORCH NO-TIMM"), done.stdout + done.stderr
