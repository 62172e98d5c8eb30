"""Issue 13's fast paths give the same answers: one forward for an explanation and its heatmaps,
sizes from headers, digests and layers computed once per model object and again after a change,
--device, the allocator/prefetch extraction, the ablation's spilled maps. Correctness only: the
timings are in benchmarks/speed.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from saywhy.errors import SaywhyError
from saywhy.model import activations as activations_module
from saywhy.pipeline import ExplainerSession, Heatmaps, SpilledMaps, image_size


class _Forwards:
    """Counts the model's forward passes (a hook on the whole model, always removed)."""

    def __init__(self, model: nn.Module):
        self.model, self.n = model, 0

    def __enter__(self):
        self.handle = self.model.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.fixture
def fresh(tiny_noisy_synthbirds):
    """A session of its own over the shared network and explainer (the shared session stays untouched)."""
    shared = tiny_noisy_synthbirds["session"]
    session = ExplainerSession(shared.explainer, shared.model)
    records = tiny_noisy_synthbirds["dataset"].split(train=False)[:3]
    images = torch.stack([session.preprocess(__import__("saywhy.data.images", fromlist=["open_image"]).open_image(r.path))
                          for r in records])
    return session, images, [r.path for r in records]


def test_explain_with_heatmaps_of_cited_and_extra_attributes_runs_one_forward(fresh):
    session, images, _ = fresh
    extra = session.explainer.vocabulary_[-2:]
    with _Forwards(session.model) as seen:
        explained = session.explain(images, heatmaps=True, attributes=extra)
    assert seen.n == 1
    for e in explained:
        cited = [t for t, _ in e.attributes]
        assert e.heatmaps.attributes == list(dict.fromkeys(cited + extra))
        assert e.heatmaps.image.shape == (len(e.heatmaps.attributes), 32, 32)


def test_ground_after_explain_reuses_the_maps_and_equals_a_fresh_pass(fresh, tiny_noisy_synthbirds):
    session, images, _ = fresh
    wanted = session.explainer.vocabulary_[:4]
    with _Forwards(session.model) as seen:
        explained = session.explain(images)
        from_explanation = session.ground(explained[1], wanted)
        from_tensor = session.ground(images[1], wanted)
    assert seen.n == 1  # explain's pass serves both ground calls
    other = ExplainerSession(session.explainer, session.model)
    again = other.ground(images[1], wanted)  # a session that never saw the image: its own pass
    np.testing.assert_array_equal(from_explanation.layer, from_tensor.layer)
    for got in (from_explanation, from_tensor):  # a batch of 3 and a batch of 1 round alike to float32
        np.testing.assert_allclose(got.layer, again.layer, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got.class_map, again.class_map, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got.image, again.image, atol=1e-4)
        assert got.attributes == again.attributes and got.box == again.box
    assert from_explanation.class_index == explained[1].class_index


def test_a_tensor_changed_in_place_is_mapped_again(fresh):
    session, images, _ = fresh
    wanted = session.explainer.vocabulary_[:2]
    images = images.clone()
    session.explain(images)
    before = session.ground(images[0], wanted).layer
    images[0].mul_(0.5)  # same storage, new version: the kept maps no longer describe it
    with _Forwards(session.model) as seen:
        after = session.ground(images[0], wanted).layer
    assert seen.n == 1 and not np.array_equal(before, after)


def test_heatmaps_of_an_explanation_are_selected_without_any_pass(fresh):
    session, images, _ = fresh
    explained = session.explain(images[:1], heatmaps=True)[0]
    cited = [t for t, _ in explained.attributes][::-1]
    with _Forwards(session.model) as seen:
        picked = session.ground(explained, cited)
    assert seen.n == 0 and picked.attributes == cited
    np.testing.assert_array_equal(picked.layer[0], explained.heatmaps.layer[len(cited) - 1])


def test_files_explained_with_heatmaps_match_tensors(fresh):
    session, images, paths = fresh
    by_file = session.explain(paths, heatmaps=True)
    by_tensor = session.explain(images, heatmaps=True)
    for f, t in zip(by_file, by_tensor):
        assert f.sentence == t.sentence
        np.testing.assert_allclose(f.heatmaps.layer, t.heatmaps.layer, rtol=1e-5, atol=1e-6)
        assert f.heatmaps.image_size == (64, 64)  # the file's own size, from its header


def test_image_size_reads_only_the_header(tmp_path):
    from PIL import Image

    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 70, 3), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # the pixel data cut short: decoding it would fail
    assert image_size(path) == (70, 40)
    with pytest.raises(SaywhyError, match="cannot be read"):
        image_size(tmp_path / "absent.png")


def test_weights_digest_is_computed_once_and_again_after_a_change(monkeypatch):
    from saywhy.model import checkpoint
    from saywhy.model.smallcnn import SmallCNN

    model = SmallCNN(n_classes=3)
    calls = []
    real = checkpoint._weights_digest
    monkeypatch.setattr(checkpoint, "_weights_digest", lambda m: calls.append(1) or real(m))
    first = checkpoint.weights_digest(model)
    assert checkpoint.weights_digest(model) == first and len(calls) == 1
    weight = next(model.parameters())
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)  # in place: the version counter moves
    assert checkpoint.weights_digest(model) != first and len(calls) == 2
    model.load_state_dict({**model.state_dict(), next(iter(dict(model.named_parameters()))): saved})
    assert checkpoint.weights_digest(model) == first and len(calls) == 3
    model.features = nn.Sequential(*model.features)  # a swapped sub-module
    checkpoint.weights_digest(model)
    assert len(calls) == 4


def test_backbone_digest_and_layers_are_memoized_per_model(monkeypatch):
    from saywhy.model import feature_cache, layers
    from saywhy.model.smallcnn import SmallCNN

    model = SmallCNN(n_classes=3)
    digests = []
    real = feature_cache._backbone_digest
    monkeypatch.setattr(feature_cache, "_backbone_digest", lambda m, h: digests.append(1) or real(m, h))
    a = feature_cache.backbone_digest(model, "classifier")
    assert feature_cache.backbone_digest(model, "classifier") == a and len(digests) == 1
    with _Forwards(model) as seen:
        first = layers.find_layers(model, torch.zeros(1, 3, 32, 32))
        assert layers.find_layers(model, torch.zeros(1, 3, 32, 32)) is first
        assert seen.n == 1
        layers.find_layers(model, torch.zeros(1, 3, 48, 48))  # another input size: found again
        assert seen.n == 2


def test_feature_cache_reads_its_shards_once_and_notices_new_ones(tmp_path, fresh, monkeypatch):
    from saywhy.model import feature_cache
    from saywhy.model.feature_cache import FeatureCache

    session, _, paths = fresh
    reads = []  # whole reads of the folder or lookups of a few rows: either reads the disk
    real, real_lookup = feature_cache._read_shards, feature_cache._looked_up
    monkeypatch.setattr(feature_cache, "_read_shards", lambda f, n: reads.append(1) or real(f, n))
    monkeypatch.setattr(feature_cache, "_looked_up", lambda f, n, w: reads.append(1) or real_lookup(f, n, w))
    cache = FeatureCache(tmp_path / "features")
    computed = cache.pooled(session.model, paths[:2], session.preprocess, session.layers, progress=False)
    hit = cache.pooled(session.model, paths[:2], session.preprocess, session.layers, progress=False)
    again = cache.pooled(session.model, paths[:2], session.preprocess, session.layers, progress=False)
    assert (computed.n_computed, hit.n_cached, again.n_cached) == (2, 2, 2)
    assert len(reads) == 2  # empty folder, then the new shard; the third call reads nothing
    np.testing.assert_array_equal(hit.pooled, computed.pooled)
    other = FeatureCache(tmp_path / "features")  # another process writes a shard
    other.pooled(session.model, paths[2:], session.preprocess, session.layers, progress=False)
    assert cache.pooled(session.model, paths, session.preprocess, session.layers, progress=False).n_cached == 3


def test_extraction_with_prefetch_and_default_batch_equals_one_image_at_a_time(fresh, monkeypatch):
    from saywhy.model.activations import extract_activations

    session, _, paths = fresh
    items = list(paths) * 3
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(activations_module.os, "cpu_count", lambda: 2)  # a free core: decoding runs in a thread
    fast = extract_activations(session.model, items, session.preprocess, session.layers, batch_size=4, progress=False)
    slow = extract_activations(session.model, items, session.preprocess, session.layers, batch_size=1, progress=False,
                               num_workers=0)
    np.testing.assert_allclose(fast.pooled, slow.pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fast.index, np.arange(len(items)))


def test_prefetch_raises_the_producers_error_and_stops_early():
    def batches():
        yield 1
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        list(activations_module.prefetched(batches()))
    produced = []

    def endless():
        for i in range(10_000):
            produced.append(i)
            yield i

    stream = activations_module.prefetched(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # the consumer stops: the producer does too
    assert len(produced) < 100


def test_spilled_maps_keep_maps_on_disk_and_delete_them():
    from saywhy.model.activations import Activations

    memo = SpilledMaps()
    maps = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    memo["a"] = Activations(pooled=np.ones((2, 3), np.float32), logits=np.zeros((2, 4), np.float32),
                            index=np.arange(2), maps=maps, n_items=2)
    assert memo._rows["a"][0].maps is None  # not held in memory
    got = memo.get("a")
    np.testing.assert_array_equal(got.maps, maps)
    assert got.n_items == 2 and memo.get("b") is None and "a" in memo
    folder = memo._folder
    memo.close()
    assert not folder.exists() and len(memo) == 0


def test_device_option_runs_on_cpu_and_refuses_a_missing_cuda_in_one_line(tiny_noisy_synthbirds, capsys):
    from saywhy.cli import main

    image = str(tiny_noisy_synthbirds["dataset"].split(train=False)[0].path)
    common = ["--home", str(tiny_noisy_synthbirds["home"]), "explain", image, "--explainer",
              str(tiny_noisy_synthbirds["exp"])]
    assert main(common + ["--device", "cpu"]) == 0
    assert "This is" in capsys.readouterr().out
    assert main(common + ["--amp", "bf16"]) == 0
    assert "--amp bf16 applies on CUDA only" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(common + ["--device", "cuda"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("saywhy: error: --device cuda:") and "use --device cpu" in err[0]
    assert main(common + ["--device", "tpu"]) == 2


def test_heatmaps_compute_image_maps_on_first_read():
    layer = np.arange(8.0).reshape(2, 2, 2)
    maps = Heatmaps(["a", "b"], layer, layer[0], (0, 0, 4, 4), (4, 4), 0)
    assert "image" not in maps.__dict__
    assert maps.image.shape == (2, 4, 4) and maps.image[1].max() == 1.0
    assert maps.select(["b"]).layer.tolist() == [layer[1].tolist()]


def test_batched_heatmaps_equal_each_image_alone_and_their_own_cam(fresh):
    """Rows that map the same attributes share one product: each equals that image mapped alone."""
    session, images, _ = fresh
    wanted = session.explainer.vocabulary_[:3]
    together = session.explain(images, heatmaps=wanted)
    for i, e in enumerate(together):
        alone = session.explain(images[i:i + 1], heatmaps=wanted)[0]
        scale = np.abs(alone.heatmaps.layer).max()  # float32 products: agreement to float32's precision of the scale
        np.testing.assert_allclose(e.heatmaps.layer, alone.heatmaps.layer, rtol=0, atol=1e-5 * scale)
        maps = session.activations([images[i]], keep_maps=True).maps[0].astype(np.float64)
        cam = np.tensordot(session.explainer.head_weights_[e.class_index], maps, axes=1)  # sum_k w_ck f_k
        np.testing.assert_allclose(e.heatmaps.class_map, cam, rtol=0, atol=1e-5 * np.abs(cam).max())
        assert e.heatmaps.class_index == e.class_index and e.heatmaps.layer.dtype == np.float64


def test_the_training_check_sees_a_submodule_added_or_switched_after_the_first_call():
    from saywhy.model.modes import in_training, submodules

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    assert not in_training(net) and len(submodules(net)) == 2
    net[1].train()  # one submodule switched: its flag is read on every call
    assert in_training(net)
    net.eval()
    net.add_module("norm", nn.BatchNorm2d(4))  # registered after the listing, in train mode
    assert in_training(net) and len(submodules(net)) == 3
    net.norm.eval()
    assert not in_training(net)


def test_one_blas_thread_limits_numpy_blas_inside_and_restores_it():
    from threadpoolctl import threadpool_info

    from saywhy.blas import one_blas_thread

    def counts():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = counts()
    with one_blas_thread():
        assert all(n == 1 for n in counts())
    assert counts() == before
    with pytest.raises(ZeroDivisionError), one_blas_thread():
        1 / 0
    assert counts() == before
