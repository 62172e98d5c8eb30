"""Bad inputs end as one line or are skipped and counted, never as wrong numbers (issue 10)."""
from __future__ import annotations

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
