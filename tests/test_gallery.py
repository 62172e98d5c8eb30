"""The gallery (Figures 3, 1 and 8): CAM on hand-made maps, and the page on a tiny synthbirds."""
from __future__ import annotations

import base64
import io
import json
import random
import re
from dataclasses import replace
from html import escape

import numpy as np
import pytest
from PIL import Image

from saywhy.cli import main
from saywhy.data.records import Dataset
from saywhy.errors import SaywhyError
from saywhy.apps.gallery import build_gallery, class_activation_map
from saywhy.render.gallery import write_gallery


def test_cam_is_the_class_weighted_sum_of_maps():
    maps = np.zeros((3, 2, 2))
    maps[0, 0, 1], maps[1, 1, 0], maps[2] = 2.0, 5.0, 1.0
    assert class_activation_map(np.array([1.0, 0.5, -1.0]), maps).tolist() == [[-1.0, 1.0], [1.5, -1.0]]


def test_cam_shape_mismatch_is_an_error():
    with pytest.raises(SaywhyError, match="CAM needs"):
        class_activation_map(np.ones(2), np.zeros((3, 2, 2)))


# ----- end to end on a tiny synthbirds ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_noisy_synthbirds) -> dict:
    """The shared tiny synthbirds, with the network's prediction for every test image."""
    base, root, dataset = (tiny_noisy_synthbirds[k] for k in ("base", "root", "dataset"))
    session = tiny_noisy_synthbirds["session"]
    test = dataset.split(train=False)
    predicted = session.activations(test, strict=True).logits.argmax(axis=1)
    return {"base": base, "root": root, "dataset": dataset, "session": session, "exp": base / "exp",
            "predicted": {r.path: int(p) for r, p in zip(test, predicted)}}


def relabel(tiny: dict, wrong: int) -> tuple[Dataset, set[str]]:
    """The dataset with every test image labelled as predicted, except the first ``wrong`` ones (shifted by one)."""
    dataset, ids = tiny["dataset"], tiny["dataset"].class_ids
    records, flipped = [], set()
    for r in dataset.records:
        if not r.is_train:
            p = tiny["predicted"][r.path]
            if len(flipped) < wrong:
                p = (p + 1) % len(ids)
                flipped.add(str(r.path))
            r = replace(r, class_id=ids[p])
        records.append(r)
    return replace(dataset, records=records), flipped


@pytest.fixture(scope="module")
def two_wrong(tiny) -> dict:
    dataset, flipped = relabel(tiny, wrong=2)
    gallery = build_gallery(tiny["session"], dataset, seed=0)
    json_path, html_path = write_gallery(gallery, tiny["base"] / "out")
    return {"dataset": dataset, "flipped": flipped, "gallery": gallery, "json": json.loads(json_path.read_text()),
            "html": html_path.read_text()}


def section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.DOTALL)
    assert match, f"no section {name}"
    return match.group(1)


def test_page_has_the_three_figures_in_order(two_wrong):
    html = two_wrong["html"]
    assert re.findall(r"<section id=\"(\w+)\">", html) == ["figure3", "figure1", "figure8"]


def test_figure3_sentences_are_the_explainers_for_the_demo_draw(tiny, two_wrong):
    samples = two_wrong["gallery"].samples
    test = two_wrong["dataset"].split(train=False)
    assert [s.path for s in samples] == [str(r.path) for r in random.Random(0).sample(test, 6)]
    expected = tiny["session"].explain([s.path for s in samples])
    assert [s.sentence for s in samples] == [e.sentence for e in expected]
    figure3 = section(two_wrong["html"], "figure3")
    for s in samples:
        assert escape(s.sentence) in figure3
        assert s.correct == (str(s.path) not in two_wrong["flipped"])
    assert figure3.count('class="right"') == sum(s.correct for s in samples)
    assert figure3.count('class="wrong"') == sum(not s.correct for s in samples)


def test_figure1_explains_a_misclassified_image_both_ways(tiny, two_wrong):
    f1, session = two_wrong["gallery"].figure1, tiny["session"]
    assert f1.misclassified and f1.path in two_wrong["flipped"] and f1.other_class == f1.true_class
    assert f1.predicted_sentence == session.explain([f1.path])[0].sentence
    assert f1.predicted_sentence.startswith(f"This is a {f1.predicted_class}") and " because it has " in f1.predicted_sentence
    assert f1.other_sentence == session.explain([f1.path], class_=f1.true_class)[0].sentence
    assert f1.other_sentence.startswith(f"This is a {f1.true_class}") and " because it has " in f1.other_sentence
    assert f1.contrast == session.contrast(f1.path, f1.true_class).sentence
    width, height = Image.open(f1.path).size
    assert f1.cam_predicted.shape == f1.cam_other.shape == (height, width)
    assert 0.0 <= f1.cam_predicted.min() and f1.cam_predicted.max() <= 1.0
    # the overlay peaks in the cell where the CAM of the predicted class peaks
    maps = session.activations([f1.path], keep_maps=True).maps[0]
    cam = class_activation_map(session.explainer.head_weights_[session.explainer.class_index(f1.predicted_class)], maps)
    y, x = np.unravel_index(f1.cam_predicted.argmax(), f1.cam_predicted.shape)
    assert np.unravel_index(cam.argmax(), cam.shape) == (y * cam.shape[0] // height, x * cam.shape[1] // width)
    html = section(two_wrong["html"], "figure1")
    for sentence in (f1.predicted_sentence, f1.other_sentence, f1.contrast):
        assert escape(sentence) in html


def test_figure8_shows_each_failure_with_canonical_images(two_wrong):
    gallery, dataset = two_wrong["gallery"], two_wrong["dataset"]
    assert gallery.n_failures == 2 and {f.path for f in gallery.failures} == two_wrong["flipped"]
    train = {str(r.path): dataset.class_index(r.class_id) for r in dataset.split(train=True)}
    html = section(two_wrong["html"], "figure8")
    for f in gallery.failures:
        assert train[f.canonical_true] == f.true_index and train[f.canonical_predicted] == f.predicted_index
        assert escape(f.true_rationale["sentence"]) in html and escape(f.predicted_rationale["sentence"]) in html
    assert html.count("data:image/jpeg;base64,") == 3 * len(gallery.failures)


def test_images_are_embedded_and_decode(two_wrong):
    html = two_wrong["html"]
    assert 'src="/' not in html and "file:" not in html
    png = re.search(r'src="data:image/png;base64,([^"]+)"', section(html, "figure1")).group(1)
    with Image.open(io.BytesIO(base64.b64decode(png))) as image:
        assert image.format == "PNG" and image.width > image.height  # two CAM panels side by side
    jpeg = re.search(r'src="data:image/jpeg;base64,([^"]+)"', section(html, "figure3")).group(1)
    with Image.open(io.BytesIO(base64.b64decode(jpeg))) as image:
        assert image.format == "JPEG"


def test_json_holds_the_same_content(two_wrong):
    data, gallery = two_wrong["json"], two_wrong["gallery"]
    assert [s["sentence"] for s in data["figure3"]] == [s.sentence for s in gallery.samples]
    assert data["figure1"]["contrast"] == gallery.figure1.contrast and data["figure1"]["cam"] == "figure1_cam.png"
    assert [f["path"] for f in data["figure8"]["failures"]] == [f.path for f in gallery.failures]
    assert data["figure8"]["n_failures"] == 2


def test_no_failure_shows_the_closest_call_and_says_so(tiny, tmp_path):
    dataset, _ = relabel(tiny, wrong=0)
    gallery = build_gallery(tiny["session"], dataset, seed=0)
    _, html_path = write_gallery(gallery, tmp_path)
    html = html_path.read_text()
    f1 = gallery.figure1
    assert not f1.misclassified and gallery.failures == [] and gallery.n_failures == 0
    assert f1.true_class == f1.predicted_class != f1.other_class
    assert "No test image is misclassified" in section(html, "figure1")
    assert "no failures: all" in section(html, "figure8") and "<table>" not in section(html, "figure8")
    # the closest call: no test image has a smaller margin between its top two logits
    logits = tiny["session"].activations(dataset.split(train=False)).logits
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert f1.margin == pytest.approx((top2[:, 1] - top2[:, 0]).min(), abs=1e-4)


def test_mismatched_dataset_is_an_error(tiny):
    dataset = replace(tiny["dataset"], class_names={**tiny["dataset"].class_names, 999: "999.Extra_Bird"})
    with pytest.raises(SaywhyError, match="classes"):
        build_gallery(tiny["session"], dataset)


def test_command_writes_the_page(tiny, tmp_path, capsys):
    out = tmp_path / "gallery"
    assert main(["--quiet", "gallery", "--root", str(tiny["root"]), "--explainer", str(tiny["exp"]),
                 "--out", str(out), "--seed", "1"]) == 0
    assert (out / "index.html").is_file() and (out / "figure1_cam.png").is_file()
    assert json.loads((out / "gallery.json").read_text())["seed"] == 1
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().out
