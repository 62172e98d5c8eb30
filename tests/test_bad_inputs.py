"""Bad inputs end as one line or are skipped and counted, never as wrong numbers (issue 10)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saywhy.data.images import ImageDataset, Preprocess, open_image
from saywhy.errors import SaywhyError


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(path)
    monkeypatch.setenv("SAYWHY_MAX_PIXELS", "10000")
    with pytest.raises(SaywhyError, match="200 x 100 pixels, more than the limit of 10,000"):
        open_image(path)
    # in a long run it is skipped and counted, not fatal
    image, _, ok = ImageDataset([path], Preprocess(image_size=8))[0]
    assert ok is False and image.shape == (3, 8, 8)


def test_a_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (400, 400)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice this
    with pytest.raises(SaywhyError, match="cannot be read .DecompressionBombError."):
        open_image(path)


def test_a_16_bit_image_is_scaled_not_clipped_to_white(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(path)
    pixels = np.asarray(open_image(path))[0, :, 0].tolist()
    assert pixels == [0, 128, 255]


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    import torch

    from saywhy.data.images import Preprocess
    from saywhy.model.checkpoint import build_model, load_checkpoint, save_checkpoint

    model = build_model("saywhy:smallcnn", 3)
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    save_checkpoint(tmp_path / "ckpt", model, {"arch": "saywhy:smallcnn", "arch_kwargs": {}, "classes": ["a", "b", "c"],
                                               "preprocess": Preprocess(image_size=32).to_dict()})
    with pytest.raises(SaywhyError, match="holds NaN or infinite weights"):
        load_checkpoint(tmp_path / "ckpt")


def test_nan_rows_in_the_feature_cache_are_computed_again(tiny_noisy_synthbirds, tmp_path):
    from saywhy.model.feature_cache import FeatureCache, _read_shards

    session = tiny_noisy_synthbirds["session"]
    items = [r.path for r in tiny_noisy_synthbirds["dataset"].split(train=False)[:4]]
    cache = FeatureCache(tmp_path / "features")
    first = cache.pooled(session.model, items, session.preprocess, session.layers, progress=False).pooled
    folder = cache.model_folder(session.model, session.preprocess, session.layers)
    from safetensors.numpy import load_file, save_file

    for shard in folder.glob("*.safetensors"):  # damage every cached row
        arrays = load_file(shard)
        arrays = {k: (np.full_like(v, np.nan) if v.dtype.kind == "f" else v) for k, v in arrays.items()}
        save_file(arrays, shard)
    assert all(np.isnan(row).all() for row in _read_shards(folder, session.layers.n_filters).values())
    again = cache.pooled(session.model, items, session.preprocess, session.layers, progress=False)
    np.testing.assert_allclose(again.pooled, first, rtol=1e-6)
    assert again.n_computed == 4


def test_the_feature_cache_never_serves_a_file_replaced_by_other_bytes(tiny_noisy_synthbirds, tmp_path):
    import os

    from saywhy.model import feature_cache
    from saywhy.model.feature_cache import FeatureCache

    session = tiny_noisy_synthbirds["session"]
    target, blue = tmp_path / "bird.bmp", tmp_path / "blue.bmp"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(target)  # BMP: same size in bytes for any colours
    Image.new("RGB", (32, 32), (30, 30, 200)).save(blue)
    cache = FeatureCache(tmp_path / "features")
    red_features = cache.pooled(session.model, [target], session.preprocess, session.layers, progress=False).pooled
    stat = os.stat(target)
    target.write_bytes(blue.read_bytes())  # other bytes, then the old size and time back
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(target).st_size == stat.st_size and os.stat(target).st_mtime_ns == stat.st_mtime_ns
    feature_cache._CONTENT.clear()  # a new run
    after = cache.pooled(session.model, [target], session.preprocess, session.layers, progress=False)
    blue_features = cache.pooled(session.model, [blue], session.preprocess, session.layers, progress=False).pooled
    assert not np.allclose(red_features, blue_features)
    np.testing.assert_allclose(after.pooled, blue_features, rtol=1e-6)


def test_a_checkpoint_edited_after_saving_is_refused(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from saywhy.data.images import Preprocess
    from saywhy.model.checkpoint import build_model, load_checkpoint, save_checkpoint

    model = build_model("saywhy:smallcnn", 3)
    folder = save_checkpoint(tmp_path / "ckpt", model, {"arch": "saywhy:smallcnn", "arch_kwargs": {},
                                                         "classes": ["a", "b", "c"],
                                                         "preprocess": Preprocess(image_size=32).to_dict()})
    state = load_file(folder / "model.safetensors")
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 1.0
    save_file(state, folder / "model.safetensors")
    with pytest.raises(SaywhyError, match="does not match the weights digest"):
        load_checkpoint(folder)
    assert torch.is_tensor(state[name])


@pytest.mark.parametrize("box", [(0, 0, 0, 5), (50, 50, 10, 10), (-30, 2, 10, 10), (1, 1, float("nan"), 3)])
def test_a_box_without_pixels_of_the_image_is_skipped_and_counted_not_a_black_input(tmp_path, box):
    from saywhy.data.records import ImageRecord

    path = tmp_path / "bird.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(path)
    record = ImageRecord(image_id=1, path=path, class_id=1, is_train=True, bbox=box)
    _, _, ok = ImageDataset([record], Preprocess(image_size=8, crop="bbox"))[0]
    assert ok is False
    inside = ImageRecord(image_id=2, path=path, class_id=1, is_train=True, bbox=(30, 30, 20, 20))  # partly outside
    image, _, ok = ImageDataset([inside], Preprocess(image_size=8, crop="bbox"))[0]
    assert ok is True and image.abs().sum() > 0


def test_a_damaged_phrase_cache_heals_and_an_unwritable_one_is_a_warning(tmp_path, caplog, monkeypatch):
    import errno

    from saywhy.text import phrases
    from saywhy.text.phrases import PhraseExtractor

    extractor = PhraseExtractor(cache_dir=tmp_path / "cache")
    expected = extractor.extract(["this bird has a red crown."])
    cache_file = next((tmp_path / "cache").glob("phrases-*.jsonl"))
    cache_file.write_text(cache_file.read_text()[:-9] + "\n{not json\n")  # truncated, then garbage
    healed = PhraseExtractor(cache_dir=tmp_path / "cache")
    assert healed.extract(["this bird has a red crown."]) == expected
    assert "damaged line" in caplog.text

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(phrases.tempfile, "mkstemp", full_disk)  # the optional cache cannot be written
    assert PhraseExtractor(cache_dir=tmp_path / "other").extract(["a small blue bird."])
    assert "could not be written (No space left on device)" in caplog.text


def test_duplicate_image_ids_keep_the_first_line_and_are_counted(tmp_path):
    from conftest import write_tiny_cub

    from saywhy.data.cub import read_cub

    root = write_tiny_cub(tmp_path)
    images = root / "CUB_200_2011" / "images.txt"
    images.write_text(images.read_text() + "1 007.Blue_Bird/b_1.jpg\n")
    dataset = read_cub(root)
    assert next(r for r in dataset.records if r.image_id == 1).path.name == "a_1.jpg"
    assert dataset.skipped["duplicate id in images.txt (first line kept)"] == 1


def test_attributes_given_as_one_string_in_jsonl_are_phrases_not_letters(tmp_path):
    import json

    from conftest import write_tiny_cub

    from saywhy.data.attribute_files import attach_attribute_file
    from saywhy.data.cub import read_cub

    root = write_tiny_cub(tmp_path)
    path = tmp_path / "attributes.jsonl"
    path.write_text(json.dumps({"image": 1, "attributes": "red crown; small bird"}) + "\n")
    dataset = attach_attribute_file(read_cub(root), path)
    assert next(r for r in dataset.records if r.image_id == 1).attributes == ("red crown", "small bird")


def test_a_partly_copied_demo_model_is_made_again(tiny_noisy_synthbirds, tmp_path, monkeypatch):
    from saywhy import demo
    from saywhy.workspace import Workspace

    tiny = tiny_noisy_synthbirds
    monkeypatch.setattr(demo, "_shipped_model_folder", lambda: tiny["ckpt"])
    real_load = demo.load_checkpoint

    def load(path, *args, **kwargs):
        model, meta = real_load(path, *args, **kwargs)
        return model, {**meta, "dataset_fingerprint": "fp", "arch_kwargs": demo.DEMO_ARCH_KWARGS}

    monkeypatch.setattr(demo, "load_checkpoint", load)
    workspace = Workspace(tmp_path)
    _, _, folder = demo.ensure_demo_model(workspace, tiny["dataset"], "fp", progress=False)
    (folder / "model.safetensors").write_bytes(b"half a file")  # a copy cut short
    model, _, again = demo.ensure_demo_model(workspace, tiny["dataset"], "fp", progress=False)
    assert again == folder and (folder / "model.safetensors").stat().st_size > 100


# ----- EXIF orientation -------------------------------------------------------------------------
def _sideways_jpeg(path, orientation=6):
    """A 60 x 40 stored image, blue with a red block at the stored box (5, 10, 20, 10), tagged to be
    shown turned (orientation 6: 90 degrees clockwise, so upright it is 40 x 60)."""
    stored = np.full((40, 60, 3), (30, 30, 200), np.uint8)
    stored[10:20, 5:25] = (220, 20, 20)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    return stored


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_the_network_sees_the_upright_image(tmp_path, orientation):
    from saywhy.data.images import image_size

    path = tmp_path / "sideways.jpg"
    stored = _sideways_jpeg(path, orientation)
    upright = {3: np.rot90(stored, 2), 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}[orientation]
    seen = np.asarray(open_image(path), dtype=float)
    assert seen.shape == upright.shape and image_size(path) == (upright.shape[1], upright.shape[0])
    assert np.abs(seen - upright).mean() < 4  # JPEG round-off only


def test_a_stored_pixel_box_and_keypoint_still_select_the_same_content(tmp_path):
    from conftest import write_tiny_cub

    from saywhy.data.cub import read_cub

    root = write_tiny_cub(tmp_path)
    cub = root / "CUB_200_2011"
    _sideways_jpeg(cub / "images" / "003.Red_Bird" / "a_1.jpg")  # image 1, listed as a .jpg already
    boxes = (cub / "bounding_boxes.txt").read_text().splitlines()
    (cub / "bounding_boxes.txt").write_text("\n".join(["1 5.0 10.0 20.0 10.0", *boxes[1:]]) + "\n")
    (cub / "parts" / "part_locs.txt").write_text("1 1 7.0 12.0 1\n1 2 50.0 30.0 1\n")  # in the red block; in blue
    record = next(r for r in read_cub(root).records if r.image_id == 1)
    assert record.bbox == (20.0, 5.0, 10.0, 20.0)  # the same block, in the 40 x 60 upright image
    crop, _, ok = ImageDataset([record], Preprocess(image_size=8, crop="bbox", mean=(0, 0, 0), std=(1, 1, 1)))[0]
    assert ok and crop[0].mean() > 0.75 and crop[2].mean() < 0.25  # all red: the block, not blue background
    upright = np.asarray(open_image(record.path))
    inside, outside = record.keypoints["back"], record.keypoints["beak"]
    assert upright[int(inside.y), int(inside.x)][0] > 180 and upright[int(outside.y), int(outside.x)][2] > 180
    untagged = next(r for r in read_cub(root).records if r.image_id == 3)
    assert untagged.bbox == (2.0, 3.0, 20.0, 18.0)  # files without an orientation tag are as stored


# ----- text encodings ---------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_caption_files_with_a_byte_order_mark_are_decoded(tmp_path, encoding):
    from conftest import write_tiny_cub

    from saywhy.data.cub import read_cub

    root = write_tiny_cub(tmp_path)
    caption = root / "text_c10" / "003.Red_Bird" / "a_1.txt"
    caption.write_bytes("this bird has a rosé crown.\na small red bird.\n".encode(encoding))
    dataset = read_cub(root)
    assert next(r for r in dataset.records if r.image_id == 1).captions == ("this bird has a rosé crown.", "a small red bird.")
    assert not any("UTF-8" in reason for reason in dataset.skipped)


@pytest.mark.parametrize("data", ["this bird has a rosé crown.\n".encode("latin-1"),
                                  "this bird has a red crown.\n".encode("utf-16-le")])  # no byte-order mark
def test_a_caption_file_that_is_not_utf8_is_skipped_counted_and_named_not_read_with_replacements(tmp_path, data):
    from conftest import write_tiny_cub

    from saywhy.data.cub import read_cub

    root = write_tiny_cub(tmp_path)
    caption = root / "text_c10" / "003.Red_Bird" / "a_1.txt"
    caption.write_bytes(data)
    dataset = read_cub(root)
    reason = "caption file not UTF-8 (image kept without captions)"
    assert next(r for r in dataset.records if r.image_id == 1).captions is None
    assert dataset.skipped[reason] == 1 and dataset.examples[reason] == str(caption)
    assert all("\ufffd" not in c for r in dataset.with_captions() for c in r.captions)


def test_a_latin1_line_in_a_metadata_file_costs_that_line_only(tmp_path):
    from conftest import write_tiny_cub

    from saywhy.data.cub import read_cub

    root = write_tiny_cub(tmp_path)
    classes = root / "CUB_200_2011" / "classes.txt"
    classes.write_bytes(classes.read_bytes() + "9 009.Bécasseau\n".encode("latin-1"))
    dataset = read_cub(root)
    assert dataset.skipped["line not UTF-8 in classes.txt"] == 1 and len(dataset.records) == 4


def test_an_attribute_file_that_is_not_utf8_is_one_line_and_utf16_is_read(tmp_path):
    from conftest import write_tiny_cub

    from saywhy.data.attribute_files import attach_attribute_file
    from saywhy.data.cub import read_cub

    dataset = read_cub(write_tiny_cub(tmp_path))
    path = tmp_path / "attributes.csv"
    path.write_bytes("image,attributes\n1,rosé crown;small bird\n".encode("latin-1"))
    with pytest.raises(SaywhyError, match=r"attributes.csv is not UTF-8 .*save it as UTF-8"):
        attach_attribute_file(dataset, path)
    path.write_bytes("image,attributes\n1,rosé crown;small bird\n".encode("utf-16"))
    attached = attach_attribute_file(dataset, path)
    assert next(r for r in attached.records if r.image_id == 1).attributes == ("rosé crown", "small bird")


# ----- duplicate ids ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, extra, check", [
    ("image_class_labels.txt", "1 7\n", lambda r: r.class_id == 3),
    ("train_test_split.txt", "1 0\n", lambda r: r.is_train),
    ("bounding_boxes.txt", "1 9.0 9.0 5.0 5.0\n", lambda r: r.bbox == (2.0, 3.0, 20.0, 18.0)),
    ("parts/part_locs.txt", "1 1 30.0 30.0 0\n", lambda r: (r.keypoints["back"].x, r.keypoints["back"].visible) == (5.0, True)),
])
def test_a_duplicate_id_keeps_its_first_line_and_is_counted(tmp_path, name, extra, check):
    from conftest import write_tiny_cub

    from saywhy.data.cub import read_cub

    root = write_tiny_cub(tmp_path)
    path = root / "CUB_200_2011" / name
    path.write_text(path.read_text() + extra)
    dataset = read_cub(root)
    assert check(next(r for r in dataset.records if r.image_id == 1))
    assert sum(n for reason, n in dataset.skipped.items() if reason.startswith("duplicate")) == 1
    assert any(reason.startswith("duplicate") and Path(name).name in reason for reason in dataset.skipped)


def test_a_symlink_loop_is_one_line_saying_so(tmp_path):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(SaywhyError, match="is a link that leads nowhere"):
        open_image(loop)


@pytest.mark.parametrize("edit", [lambda m: m["vocabulary"].__setitem__(0, "red herring"),
                                  lambda m: m["class_names"].reverse(), lambda m: m["config"].__setitem__("top_k", 9)])
def test_an_explainer_whose_json_was_edited_is_refused(tiny_noisy_synthbirds, tmp_path, edit):
    import json
    import shutil

    from saywhy.explain.explainer import Explainer

    folder = shutil.copytree(tiny_noisy_synthbirds["exp"], tmp_path / "exp")
    meta = json.loads((folder / "explainer.json").read_text())
    edit(meta)
    (folder / "explainer.json").write_text(json.dumps(meta))
    with pytest.raises(SaywhyError, match="was edited after saving"):
        Explainer.load(folder)


def test_train_with_the_same_seed_gives_the_same_checkpoint(tmp_path):
    """A run killed and started again must end where an uninterrupted one does: the initial weights are seeded too."""
    from conftest import write_tiny_cub

    from saywhy.data.cub import read_cub
    from saywhy.demo import train_demo_model
    from saywhy.model.train import TrainConfig

    dataset = read_cub(write_tiny_cub(tmp_path))
    from saywhy.model.checkpoint import weights_digest

    digests = [weights_digest(train_demo_model(dataset, None, tmp_path / f"ckpt{i}", TrainConfig(epochs=1),
                                               Preprocess(image_size=16), progress=False)[0]) for i in range(2)]
    assert digests[0] == digests[1]


def test_explaining_many_images_a_block_at_a_time_changes_nothing(tiny_noisy_synthbirds, monkeypatch):
    from saywhy.explain import explainer as module

    session = tiny_noisy_synthbirds["session"]
    pooled = session.activations(tiny_noisy_synthbirds["dataset"].records[:23]).pooled  # real images' activations
    targets = [i % 4 for i in range(23)]
    whole, predicted = session.explainer.explain(pooled, targets), session.explainer.explain(pooled)
    monkeypatch.setattr(module, "EXPLAIN_BLOCK", 5)
    for blocks, expected in ((session.explainer.explain(pooled, targets), whole), (session.explainer.explain(pooled), predicted)):
        assert [(e.class_index, e.sentence, [t for t, _ in e.attributes]) for e in blocks] == \
            [(e.class_index, e.sentence, [t for t, _ in e.attributes]) for e in expected]
        assert np.allclose([e.logit for e in blocks], [e.logit for e in expected], rtol=1e-12, atol=1e-12)


def test_a_temporary_feature_shard_left_by_a_kill_is_never_read_and_is_removed_once_stale(tmp_path):
    import os

    from safetensors.numpy import save_file

    from saywhy.model import feature_cache

    keys, rows = np.zeros((1, 32), np.uint8), np.ones((1, 4), np.float32)
    fresh, stale = tmp_path / ".partial-a.safetensors", tmp_path / ".partial-b.safetensors"
    for path in (fresh, stale):
        save_file({"keys": keys, "pooled": rows}, path)
    os.utime(stale, (1, 1))
    assert feature_cache._read_shards(tmp_path, 4) == {}  # a write in progress is not a shard
    assert fresh.exists() and not stale.exists()


def test_explain_with_a_box_off_the_image_says_so(tiny_noisy_synthbirds, tmp_path, capsys):
    from saywhy.cli import main

    image = tiny_noisy_synthbirds["dataset"].records[0].path
    assert main(["--home", str(tmp_path / "home"), "explain", str(image), "--explainer", str(tiny_noisy_synthbirds["exp"]),
                 "--model", str(tiny_noisy_synthbirds["ckpt"]), "--box=500,500,10,10"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lies outside the 64 x 64 image" in err[0], err
