"""The CUB-layout reader: subsets, missing captions, bad lines, clear errors."""
import json

import pytest

from saywhy.data.attribute_files import attach_attribute_file, cub_attribute_phrase
from saywhy.data.cub import read_cub
from saywhy.errors import SaywhyError


def test_reads_non_contiguous_classes_and_split(tiny_cub):
    ds = read_cub(tiny_cub)
    assert ds.class_ids == [3, 7]
    assert ds.class_index(7) == 1
    assert [r.image_id for r in ds.split(train=True)] == [1, 3]
    assert ds.records[0].bbox == (2.0, 3.0, 20.0, 18.0)
    assert ds.records[0].keypoints["back"].visible and not ds.records[0].keypoints["beak"].visible


def test_images_without_captions_are_kept_and_counted(tiny_cub):
    ds = read_cub(tiny_cub)
    assert ds.records[3].captions is None
    assert ds.records[0].captions == ("this bird has a red crown.", "a small red bird.")
    assert ds.skipped["no caption file"] == 1
    assert ds.skipped["malformed line in bounding_boxes.txt"] == 1
    assert len(ds.with_captions()) == 3


def test_missing_image_file_is_skipped_and_counted(tiny_cub):
    (tiny_cub / "CUB_200_2011" / "images" / "007.Blue_Bird" / "b_2.jpg").unlink()
    ds = read_cub(tiny_cub)
    assert len(ds.records) == 3 and ds.skipped["image file missing"] == 1


def test_not_a_cub_folder_is_one_clear_error(tmp_path):
    with pytest.raises(SaywhyError, match="not a CUB-200-2011 folder"):
        read_cub(tmp_path)


def test_caption_folder_of_another_dataset_is_refused(tiny_cub, tmp_path):
    other = tmp_path / "other_captions"
    (other / "999.Penguin").mkdir(parents=True)
    with pytest.raises(SaywhyError, match="does not match the image list"):
        read_cub(tiny_cub, captions=other)


def test_attribute_file_csv_and_jsonl(tiny_cub, tmp_path):
    ds = read_cub(tiny_cub)
    csv_path = tmp_path / "attrs.csv"
    csv_path.write_text("image,attributes\n1,red crown;small bird\n003.Red_Bird/a_2.jpg,red crown\n99,ghost\n")
    with_csv = attach_attribute_file(ds, csv_path)
    assert with_csv.records[0].attributes == ("red crown", "small bird")
    assert with_csv.records[1].attributes == ("red crown",)
    assert with_csv.skipped["attribute row for an unknown image"] == 1
    jsonl = tmp_path / "attrs.jsonl"
    jsonl.write_text(json.dumps({"image": 3, "attributes": ["Blue Crown"]}) + "\nnot json\n")
    with_jsonl = attach_attribute_file(ds, jsonl)
    assert with_jsonl.records[2].attributes == ("blue crown",)
    assert with_jsonl.skipped["malformed attribute row"] == 1


@pytest.mark.parametrize("name, phrase", [
    ("has_wing_color::blue", "blue wing"),
    ("has_bill_shape::curved_(up_or_down)", "curved bill"),
    ("has_upperparts_color::rufous", "rufous upperparts"),
    ("has_bill_length::about_the_same_as_head", "about the same as head bill"),
])
def test_cub_attribute_names_become_phrases(name, phrase):
    assert cub_attribute_phrase(name) == phrase


def test_real_cub50_subset(cub50):
    ds = read_cub(cub50)
    assert len(ds.class_ids) == 50 and 1 in ds.class_ids
    assert len(ds.records) == 2933
    test = ds.split(train=False)
    # README: 2,221 caption files, every train image and half of the test images
    assert sum(r.captions is not None for r in ds.records) == 2221
    assert ds.skipped["no caption file"] == len(test) - (2221 - 1499)
    assert all(r.captions is not None for r in ds.split(train=True))
    assert len(ds.records[0].keypoints) == 15


def test_cub_binary_attributes(tiny_cub):
    from saywhy.data.attribute_files import attach_cub_binary_attributes, cub_attribute_files

    cub = tiny_cub / "CUB_200_2011"
    (cub / "attributes").mkdir()
    (tiny_cub / "attributes.txt").write_text("1 has_crown_color::red\n2 has_wing_color::blue\n")
    (cub / "attributes" / "image_attribute_labels.txt").write_text(
        "1 1 1 3 2.0\n1 2 0 3 2.0\n3 2 1 4 1.0\n3 1 0 2 1.0\ngarbage\n")
    ds = attach_cub_binary_attributes(read_cub(tiny_cub), *cub_attribute_files(cub))
    assert ds.records[0].attributes == ("red crown",)
    assert ds.records[2].attributes == ("blue wing",)
    assert ds.records[1].attributes is None
    assert ds.skipped["malformed attribute label"] == 1 and ds.skipped["no attributes given"] == 2
