"""Preprocessing: the bounding-box crop (the paper's setting), resize and normalization."""
import numpy as np
import pytest
from PIL import Image

from saywhy.data.images import Preprocess, open_image
from saywhy.errors import SaywhyError


def _image_with_red_box() -> Image.Image:
    array = np.zeros((40, 60, 3), np.uint8)  # black, 60 wide, 40 high
    array[10:30, 20:50] = (255, 0, 0)  # red box at x 20..50, y 10..30
    return Image.fromarray(array)


def test_bbox_crop_keeps_only_the_box():
    tensor = Preprocess(image_size=8, crop="bbox")(_image_with_red_box(), (20.0, 10.0, 30.0, 20.0))
    assert tensor.shape == (3, 8, 8)
    np.testing.assert_allclose(tensor[0].numpy(), 1.0)  # (1 - 0.5) / 0.5
    np.testing.assert_allclose(tensor[1:].numpy(), -1.0)


def test_no_crop_keeps_the_background():
    tensor = Preprocess(image_size=8, crop="none")(_image_with_red_box(), (20.0, 10.0, 30.0, 20.0))
    assert tensor[0].min() == -1.0 and tensor[0].max() == 1.0


def test_crop_without_a_box_uses_the_whole_image():
    tensor = Preprocess(image_size=8, crop="bbox")(_image_with_red_box(), None)
    assert tensor[0].min() == -1.0


def test_preprocess_round_trips_through_a_dict():
    p = Preprocess(image_size=224, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), crop="bbox")
    assert Preprocess.from_dict(p.to_dict()) == p


def test_open_image_errors_are_one_line(tmp_path):
    with pytest.raises(SaywhyError, match="does not exist"):
        open_image(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(SaywhyError, match="cannot be read"):
        open_image(tmp_path / "bad.jpg")
