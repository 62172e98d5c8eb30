"""synthbirds: layout, determinism, truth, captions and caching, on small datasets."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saywhy.data.synthbirds import (
    CUB_PARTS,
    SPECIES,
    SynthConfig,
    confusable_pairs,
    generate,
    load_truth,
    species_templates,
    synonyms,
)
from saywhy.data.synthbirds.captions import caption
from saywhy.data.synthbirds.species import COLOURS, fixed_fields_differ
from saywhy.data.synthbirds.writer import plan_images
from saywhy.errors import SaywhyError

SMALL = SynthConfig(n_images=60, image_size=64, seed=3)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("sb") / "small", SMALL, workers=1, progress=False)


def _table(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_and_config_give_identical_files_whatever_the_workers(small_root, tmp_path):
    again = generate(tmp_path / "again", SMALL, workers=2, progress=False)
    assert _tree_digest(again) == _tree_digest(small_root)


def test_another_seed_gives_other_images(small_root, tmp_path):
    other = generate(tmp_path / "other", SynthConfig(n_images=60, image_size=64, seed=4), workers=1, progress=False)
    image = "CUB_200_2011/images/001.Crimson_Tanager/Crimson_Tanager_0001.jpg"
    assert (other / image).read_bytes() != (small_root / image).read_bytes()


def test_layout_files_agree_on_ids_classes_and_split(small_root):
    cub = small_root / "CUB_200_2011"
    images = _table(cub / "images.txt")
    ids = [int(row[0]) for row in images]
    assert ids == list(range(1, 61))
    classes = {int(k): name for k, name in _table(cub / "classes.txt")}
    assert len(classes) == 24 and classes[1] == "001.Crimson_Tanager"
    labels = {int(k): int(v) for k, v in _table(cub / "image_class_labels.txt")}
    assert sorted(labels) == ids and set(labels.values()) == set(classes)
    for image_id, relpath in images:
        assert relpath.split("/")[0] == classes[labels[int(image_id)]]
        with Image.open(cub / "images" / relpath) as image:
            assert image.mode == "RGB" and image.size == (64, 64)
    split = {int(k): int(v) for k, v in _table(cub / "train_test_split.txt")}
    assert sorted(split) == ids and set(split.values()) == {0, 1}
    assert sum(split.values()) == 48  # 80% of 60
    assert [int(row[0]) for row in _table(cub / "bounding_boxes.txt")] == ids
    assert [name for _, name in (line.split(" ", 1) for line in (cub / "parts/parts.txt").read_text().splitlines())] \
        == list(CUB_PARTS)
    assert len(_table(cub / "parts/part_locs.txt")) == 60 * 15


def test_split_is_stratified_by_class():
    plans = plan_images(SynthConfig(n_images=240, image_size=32, n_species=4), species_templates(4))
    for s in range(1, 5):
        train = [p.is_train for p in plans if p.species_id == s]
        assert len(train) == 60 and sum(train) == 48


def test_every_image_has_ten_lowercase_captions(small_root):
    for _, relpath in _table(small_root / "CUB_200_2011/images.txt"):
        text = (small_root / "text_c10" / relpath).with_suffix(".txt").read_text()
        lines = text.splitlines()
        assert len(lines) == 10 and text.endswith("\n")
        assert all(line and line == line.lower() for line in lines)


def test_visible_keypoints_lie_in_the_image_and_near_the_bbox(small_root):
    cub = small_root / "CUB_200_2011"
    boxes = {int(r[0]): [float(v) for v in r[1:]] for r in _table(cub / "bounding_boxes.txt")}
    visible_parts = {}
    for image_id, part, x, y, visible in _table(cub / "parts/part_locs.txt"):
        x, y = float(x), float(y)
        if visible == "0":
            assert (x, y) == (0.0, 0.0)
            continue
        bx, by, bw, bh = boxes[int(image_id)]
        assert 0 <= x < 64 and 0 <= y < 64
        assert bx - 2 <= x <= bx + bw + 2 and by - 2 <= y <= by + bh + 2
        visible_parts.setdefault(int(image_id), set()).add(CUB_PARTS[int(part) - 1])
    for parts in visible_parts.values():
        # One side of a bird in profile is hidden: exactly one eye and one wing show.
        assert len(parts & {"left eye", "right eye"}) == 1
        assert len(parts & {"left wing", "right wing"}) == 1
        assert {"beak", "crown", "tail", "throat"} <= parts


def test_bird_fills_half_to_four_fifths_of_the_width(small_root):
    widths = [float(r[3]) / 64 for r in _table(small_root / "CUB_200_2011/bounding_boxes.txt")]
    assert min(widths) >= 0.45 and max(widths) <= 0.85


def test_at_least_20_species_with_unique_fixed_looks():
    assert len(SPECIES) >= 20
    names = [s.name for s in SPECIES]
    assert len(set(names)) == len(names)
    for i, a in enumerate(SPECIES):
        for b in SPECIES[i + 1:]:
            assert fixed_fields_differ(a, b), (a.name, b.name)


def test_confusable_pairs_differ_in_one_or_two_attributes_each_side():
    pairs = confusable_pairs(species_templates())
    assert len(pairs) >= 5
    for pair in pairs:
        assert 1 <= len(pair["a_only"]) <= 2 and 1 <= len(pair["b_only"]) <= 2


def test_attributes_are_adjective_noun_with_many_colours():
    attributes = {a for s in SPECIES for a in s.plumage.attributes() + s.optional_attributes()}
    assert all(re.fullmatch(r"[a-z]+ [a-z]+", a) for a in attributes)
    colours_used = {a.split()[0] for a in attributes} & set(COLOURS)
    assert len(colours_used) >= 8
    for needed in ("spotted breast", "striped wing", "long beak", "curved beak", "forked tail", "white eyebrow"):
        assert needed in attributes


def test_truth_records_every_image_and_species(small_root):
    truth = load_truth(small_root)
    assert sorted(truth["images"]) == list(range(1, 61))
    assert len(truth["species"]) == 24 and truth["noisy_labels"] == []
    for record in truth["images"].values():
        template = truth["species"][record["species"]]
        allowed = set(template["attributes"]) | set(template["optional_attributes"])
        assert set(record["attributes"]) <= allowed
        assert record["label"] == record["species"]
    assert truth["synonyms"]["bill"] == "beak" and truth["synonyms"]["gray"] == "grey"
    assert truth["synonyms"]["chest"] == "breast"


PART_WORDS = {w for w, c in synonyms().items() if c in {
    "crown", "forehead", "nape", "throat", "breast", "belly", "back", "wing", "tail", "beak", "leg", "eye",
    "eyebrow", "eyering", "wingbar"}}


def _colour_part_mentions(text: str) -> set[str]:
    """Canonical "colour part" pairs: each part word with the colour words just before it.

    A run of words ends at a part word or at "a", "an", "with", "has"; "and" does not
    end it, so "black and white spotted breast" names both colours of the breast.
    """
    syn, out, run = synonyms(), set(), []
    for word in re.findall(r"[a-z]+", text):
        if word in PART_WORDS:
            out |= {f"{syn[w]} {syn[word]}" for w in run if syn.get(w) in COLOURS}
            run = []
        elif word in ("a", "an", "with", "has"):
            run = []
        else:
            run.append(word)
    return out


def test_colour_part_mentions_reads_coordinated_colours():
    assert _colour_part_mentions("this bird has black wings and a black and white spotted chest.") == {
        "black wing", "black breast", "white breast"}


def test_noise_free_captions_only_name_true_colours(tmp_path):
    root = generate(tmp_path / "clean", SynthConfig(n_images=40, image_size=32, caption_noise=0.0), workers=1,
                    progress=False)
    truth = load_truth(root)
    mentioned = 0
    for image_id, relpath in _table(root / "CUB_200_2011/images.txt"):
        true = set(truth["images"][int(image_id)]["attributes"])
        for line in (root / "text_c10" / relpath).with_suffix(".txt").read_text().splitlines():
            mentions = _colour_part_mentions(line)
            assert mentions <= true, (line, mentions - true)
            mentioned += len(mentions)
    assert mentioned > 40 * 10  # more than one colour per caption on average


def test_caption_noise_names_wrong_colours_at_about_the_configured_rate():
    attributes = list(SPECIES[0].plumage.attributes())
    rng = np.random.default_rng(0)
    wrong = sum(not set(caption(attributes, rng, 0.4)[1]) <= set(attributes) for _ in range(2000))
    # Half of the noisy captions get a wrong colour (the other half a vague word).
    assert 0.14 < wrong / 2000 < 0.26


def test_same_fingerprint_is_a_cache_hit(small_root):
    marker = small_root / ".synthbirds_fingerprint"
    assert marker.read_text().strip() == SMALL.fingerprint()
    before = marker.stat().st_mtime_ns
    assert generate(small_root, SMALL, workers=1, progress=False) == small_root
    assert marker.stat().st_mtime_ns == before


def test_other_config_or_foreign_folder_is_refused(small_root, tmp_path):
    with pytest.raises(SaywhyError, match="other settings"):
        generate(small_root, SynthConfig(n_images=61, image_size=64, seed=3), workers=1, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SaywhyError, match="not empty"):
        generate(foreign, SMALL, workers=1, progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_fingerprint_changes_with_any_setting():
    assert SynthConfig().fingerprint() != SynthConfig(label_noise=0.04).fingerprint()
    assert SynthConfig().fingerprint() == SynthConfig().fingerprint()


def test_label_noise_flips_about_the_requested_share(tmp_path):
    root = generate(tmp_path / "noisy", SynthConfig(n_images=200, image_size=32, label_noise=0.1), workers=1,
                    progress=False)
    truth = load_truth(root)
    flipped = [i for i, r in truth["images"].items() if r["label"] != r["species"]]
    assert sorted(flipped) == truth["noisy_labels"]
    assert len(flipped) == 20
    labels = {int(k): int(v) for k, v in _table(root / "CUB_200_2011/image_class_labels.txt")}
    assert all(labels[i] == truth["images"][i]["label"] for i in labels)


def test_invalid_config_is_a_saywhy_error():
    with pytest.raises(SaywhyError, match="n_species"):
        SynthConfig(n_species=99)


def test_a_failed_run_leaves_no_folder_behind(tmp_path, monkeypatch):
    from saywhy.data.synthbirds import writer

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "_write_truth", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path / "broken", SynthConfig(n_images=10, image_size=32), workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []
