"""Attribute grounding (eq. 9): hand-set maps, exact geometry, every registered method, Grad-CAM, end to end."""
import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from PIL import Image
from torch import nn

from saywhy.apps.grounding import (
    GROUNDING_METHODS,
    GroundingMethod,
    attribute_alphas,
    filter_figure,
    ground,
    grounding_pck,
    grounding_points,
    list_grounding_methods,
    register,
)
from saywhy.cli import main
from saywhy.model.gradcam import grad_cam_maps
from saywhy.model.layers import LayerChoice
from saywhy.core.grounding import (
    attribute_scores,
    cells_to_image,
    normalize_heatmaps,
    peak_cells,
    upsample_heatmap,
)
from saywhy.data.images import Preprocess
from saywhy.data.records import ImageRecord, Keypoint
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig
from saywhy.model.activations import Activations
from saywhy.pipeline import ExplainerSession, fit_explainer
from saywhy.render.overlay import overlay_figure


# ----- eq. 9 on hand-set maps --------------------------------------------------------------------
def _two_filter_maps() -> np.ndarray:
    maps = np.zeros((2, 5, 6))
    maps[0, 2, 3] = 4.0  # filter 0 fires at (2, 3)
    maps[1, 0, 1] = 5.0  # filter 1 fires at (0, 1), more strongly
    maps += 0.1
    return maps


def test_heatmap_peaks_where_the_attributes_filter_fires():
    pdf = np.array([[0.9, 0.2], [0.1, 0.8]])  # p(t|f): filter 0 -> attribute 0, filter 1 -> attribute 1
    heatmaps = normalize_heatmaps(attribute_scores(_two_filter_maps(), pdf.T))
    assert peak_cells(heatmaps).tolist() == [[2, 3], [0, 1]]
    # The constant p.d.f. sees only the stronger filter.
    assert peak_cells(attribute_scores(_two_filter_maps(), np.array([[0.5, 0.5]]))).tolist() == [[0, 1]]


def test_eq9_sum_is_exact():
    scores = attribute_scores(_two_filter_maps(), np.array([0.75, 0.25]))
    assert scores[2, 3] == pytest.approx(0.75 * 4.1 + 0.25 * 0.1)
    assert scores[0, 1] == pytest.approx(0.75 * 0.1 + 0.25 * 5.1)
    assert scores[4, 5] == pytest.approx(0.1)


def test_minmax_sigma_spans_zero_to_one_and_no_monotone_sigma_moves_the_peak():
    scores = attribute_scores(_two_filter_maps(), np.array([[0.9, 0.1]]))
    heatmap = normalize_heatmaps(scores, "minmax")
    assert heatmap.min() == 0.0 and heatmap.max() == 1.0
    for sigma in ("minmax", "softmax", "l1", "identity"):
        assert peak_cells(normalize_heatmaps(scores, sigma)).tolist() == [[2, 3]], sigma
    assert normalize_heatmaps(scores, "l1").sum() == pytest.approx(1.0)


def test_unknown_sigma_and_mismatched_filters_are_errors():
    with pytest.raises(SaywhyError, match="minmax"):
        normalize_heatmaps(np.zeros((2, 2)), "max")
    with pytest.raises(SaywhyError, match="2 filters but the feature maps have 3"):
        attribute_scores(np.zeros((3, 2, 2)), np.ones((1, 2)))


# ----- geometry ----------------------------------------------------------------------------------
def test_cell_centre_maps_to_the_right_pixel_without_crop():
    # 8x8 maps of a 128 px image: 16 px cells, cell (2, 3) centred at x = 3.5 * 16, y = 2.5 * 16.
    assert cells_to_image(np.array([2, 3]), (8, 8), (0, 0, 128, 128)).tolist() == [56.0, 40.0]
    # A non-square image is stretched to a square input: x and y scale differently.
    assert cells_to_image(np.array([2, 3]), (8, 8), (0, 0, 160, 96)).tolist() == [70.0, 30.0]


def test_cell_centre_maps_to_the_right_pixel_with_bbox_crop():
    box = Preprocess(crop="bbox").seen_box((100, 100), (10.0, 20.0, 23.5, 40.0))
    assert box == (10, 20, 34, 60)  # int(x), int(y), ceil(x + w), ceil(y + h): 24 x 40 px
    # 3 px per column, 5 px per row: cell (2, 3) -> (10 + 3.5 * 3, 20 + 2.5 * 5).
    assert cells_to_image(np.array([2, 3]), (8, 8), box).tolist() == [20.5, 32.5]
    assert Preprocess(crop="none").seen_box((100, 80), (10.0, 20.0, 23.5, 40.0)) == (0, 0, 100, 80)


def test_upsampled_heatmap_puts_the_cell_value_on_its_pixel_and_zero_outside_the_crop():
    heatmap = np.zeros((8, 8))
    heatmap[2, 3] = 1.0
    image = upsample_heatmap(heatmap, (10, 20, 34, 60), (100, 100))
    assert image.shape == (100, 100)
    assert image[32, 20] == 1.0  # pixel (20, 32) is centred on (20.5, 32.5), the cell centre
    assert np.unravel_index(image.argmax(), image.shape) == (32, 20)
    assert image[32, 21] == pytest.approx(2 / 3)  # one pixel right: 1/3 of the way to the next centre
    assert image[:20].max() == 0.0 and image[:, 34:].max() == 0.0


def test_geometry_matches_what_preprocess_does():
    """A white block in the original image lands in the input cell that maps back onto it."""
    pixels = np.zeros((30, 40, 3), np.uint8)
    pixels[10, 12:14] = 255  # x in [12, 14), y in [10, 11)
    bbox = (4.0, 6.0, 16.0, 8.0)  # box (4, 6, 20, 14): 16 x 8 px -> 8 x 8 input, 2 px per column, 1 per row
    preprocess = Preprocess(image_size=8, mean=(0, 0, 0), std=(1, 1, 1), crop="bbox")
    tensor = preprocess(Image.fromarray(pixels), bbox)[0].numpy()
    cell = np.unravel_index(tensor.argmax(), tensor.shape)
    assert cell == (4, 4)
    box = preprocess.seen_box((40, 30), bbox)
    assert cells_to_image(np.array(cell), (8, 8), box).tolist() == [13.0, 10.5]  # the block's centre


# ----- attributes and Grad-CAM ---------------------------------------------------------------------
def _small_explainer() -> Explainer:
    pooled = np.array([[5.0, 0.1], [0.1, 5.0], [4.0, 0.2]])
    counts = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]]))
    return Explainer(ExplainerConfig(min_df=1, sigma_activation="l1", attribute_model="cooccurrence")).fit(
        pooled, counts, ["red crown", "blue wing", "grey bill"], np.eye(2), ["A", "B"])


def test_unknown_attribute_lists_the_closest_known_ones():
    with pytest.raises(SaywhyError, match="'red crwn' is not in the explainer's vocabulary; closest: red crown"):
        attribute_alphas(_small_explainer(), ["red crwn"])


def test_alpha_is_the_pdf_column_and_synonyms_sum_spellings():
    explainer = _small_explainer()
    pdf = explainer.filter_attribute_pdf_
    np.testing.assert_array_equal(attribute_alphas(explainer, ["blue wing"])[0], pdf[:, 1])
    merged = attribute_alphas(explainer, ["red beak"], synonyms={"bill": "beak", "grey": "red"})
    np.testing.assert_allclose(merged[0], pdf[:, 2])
    merged = attribute_alphas(explainer, ["red crown"], synonyms={"crown": "beak", "bill": "beak", "grey": "red"})
    np.testing.assert_allclose(merged[0], pdf[:, 0] + pdf[:, 2])


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_grad_cam_hooks_are_removed_even_if_the_model_raises():
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("boom")

    model = Exploding()
    with pytest.raises(RuntimeError, match="boom"):
        grad_cam_maps(model, _choice("conv"), torch.zeros(1, 3, 4, 4))
    assert _hook_count(model) == 0
    with pytest.raises(SaywhyError, match="no layer named"):
        grad_cam_maps(model, _choice("missing"), torch.zeros(1, 3, 4, 4))
    assert _hook_count(model) == 0


def _choice(layer: str) -> LayerChoice:
    return LayerChoice(feature_layer=layer, head="3", n_filters=2, n_classes=2)


def _pooled_linear_net() -> nn.Module:
    conv = nn.Conv2d(1, 2, 1, bias=False)
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight[:, 0, 0, 0] = torch.tensor([1.0, -1.0])
        head.weight.copy_(torch.tensor([[2.0, 1.0], [0.0, 1.0]]))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)


def test_grad_cam_of_a_pooled_linear_head_is_relu_of_cam():
    model = _pooled_linear_net()
    x = torch.arange(-2.0, 2.0).reshape(1, 1, 2, 2)  # -2, -1, 0, 1
    maps = torch.cat([x, -x], dim=1)[0].numpy()
    # Pooled (-0.5, 0.5): logits (-0.5, 0.5), so class 1 is predicted; class 0 is asked for explicitly.
    cam = (2.0 * maps[0] + 1.0 * maps[1]) / 4  # gradients are W[c] / (h * w)
    got = grad_cam_maps(model, _choice("0"), x, classes=[0])[0]
    np.testing.assert_allclose(got, np.maximum(cam, 0), rtol=1e-6)
    predicted = grad_cam_maps(model, _choice("0"), x)[0]  # class 1: W = (0, 1)
    np.testing.assert_allclose(predicted, np.maximum(maps[1] / 4, 0), rtol=1e-6)
    assert _hook_count(model) == 0


def test_grad_cam_of_a_frozen_network_is_the_same():
    # inference code freezes parameters (requires_grad_(False)); Grad-CAM still needs the maps' gradient
    model = _pooled_linear_net()
    x = torch.arange(-2.0, 2.0).reshape(1, 1, 2, 2)
    expected = grad_cam_maps(model, _choice("0"), x, classes=[0])
    model.requires_grad_(False)
    np.testing.assert_allclose(grad_cam_maps(model, _choice("0"), x, classes=[0]), expected)
    assert _hook_count(model) == 0


# ----- every grounding method, exactly, on hand-placed maps and keypoints ---------------------------
class _HandSession:
    """What grounding asks of a session (activations with maps, the explainer), with hand-placed maps."""

    def __init__(self, explainer: Explainer, maps: dict):
        self.explainer, self.maps, self.preprocess = explainer, maps, Preprocess(image_size=8)

    def activations(self, items, keep_maps=False, strict=True):
        maps = np.stack([self.maps[r.path] for r in items])
        pooled = maps.mean(axis=(2, 3))
        return Activations(pooled, self.explainer.decision_function(pooled), np.arange(len(items)), maps, len(items))


def _hand_placed(tmp_path):
    """Two 80 x 80 images with 4 x 4 maps (20 px cells, centres at 10, 30, 50, 70), crown at cell (1, 2).

    Filter 0 fires at cell (1, 2) = pixel (50, 30), the crown; filter 1 fires twice as strongly at
    cell (3, 0) = pixel (10, 70). The head is the identity: image 0 is class 0 (filter 0 wins on
    average), image 1 class 1.
    """
    explainer = _small_explainer()
    records, maps = [], {}
    for i, (v0, v1) in enumerate([(20.0, 2.0), (1.0, 2.0)]):
        path = tmp_path / f"bird{i}.png"
        Image.new("RGB", (80, 80)).save(path)
        m = np.zeros((2, 4, 4))
        m[0, 1, 2], m[1, 3, 0] = v0, v1
        maps[path] = m
        records.append(ImageRecord(i, path, 0, False, bbox=(0.0, 0.0, 80.0, 80.0),
                                   keypoints={"crown": Keypoint(50.0, 30.0, True)}))
    return _HandSession(explainer, maps), records


def test_every_method_predicts_its_hand_computed_point(tmp_path):
    session, records = _hand_placed(tmp_path)
    pdf = session.explainer.filter_attribute_pdf_
    assert pdf[0, 0] > 2 * pdf[1, 0]  # "red crown" is mostly filter 0: eq. 9 peaks where filter 0 fires
    methods = [m for m in list_grounding_methods() if m != "gradcam"]  # Grad-CAM needs a network: below
    points = grounding_points(session, records, [["red crown"]] * 2, ["red crown"], methods, seed=5)
    got = {m: [p for p, _, _ in found] for m, found in points.items()}
    assert got["proposed"] == [(50.0, 30.0), (50.0, 30.0)]  # on the crown in both images
    # The constant p.d.f. is the mean map's peak: filter 0 in image 0 (20 > 2), filter 1 in image 1.
    assert got["constant"] == [(50.0, 30.0), (10.0, 70.0)]
    # CAM is the predicted class's weights' map: W = I, so class c's map is filter c's.
    assert session.explainer.predict(np.stack([m.mean(axis=(1, 2)) for m in session.maps.values()])).tolist() == [0, 1]
    assert got["cam"] == [(50.0, 30.0), (10.0, 70.0)]
    assert got["bbox_center"] == [(40.0, 40.0), (40.0, 40.0)]
    assert got["keypoint_cell"] == [(50.0, 30.0), (50.0, 30.0)]  # the crown's own cell (1, 2), in both images
    again = grounding_points(session, records, [["red crown"]] * 2, ["red crown"], ["random"], seed=5)["random"]
    assert [p for p, _, _ in again] == got["random"]  # seeded
    expected = np.random.default_rng(5).uniform(0, 1, (2, 2)) * 80
    assert got["random"] == [tuple(p) for p in expected.tolist()]

    # PCK against the crown (object size 80): 0 px, 56.6 px and 14.1 px away.
    table = grounding_pck(session, records, [["red crown"]] * 2, part_map={"crown": ["crown"]}, methods=methods)
    assert table.attributes == ["red crown"]
    pck = {m: r.pck for m, r in table.results.items()}
    assert pck["proposed"] == {0.1: 1.0, 0.2: 1.0, 0.3: 1.0}
    assert pck["constant"] == pck["cam"] == {0.1: 0.5, 0.2: 0.5, 0.3: 0.5}
    assert pck["bbox_center"] == {0.1: 0.0, 0.2: 1.0, 0.3: 1.0}


def test_unknown_method_names_the_registered_ones(tmp_path):
    session, records = _hand_placed(tmp_path)
    with pytest.raises(SaywhyError, match="unknown grounding method.*choose from proposed, part_contrast, part_rest, part_maps, part_maps_alpha, constant"):
        grounding_points(session, records, [["red crown"]] * 2, ["red crown"], ["proposed", "nearest"])


def test_a_registered_method_is_run_by_grounding_points(tmp_path, monkeypatch):
    monkeypatch.setattr("saywhy.apps.grounding.GROUNDING_METHODS", dict(GROUNDING_METHODS))

    @register
    class TopLeft(GroundingMethod):
        name, label = "top_left", "top-left corner"

        def points(self, item):
            return np.zeros((len(item.attributes), 2))

    session, records = _hand_placed(tmp_path)
    assert list_grounding_methods()[-1] == "top_left"
    points = grounding_points(session, records, [["red crown"]] * 2, ["red crown"], ["proposed", "top_left"])
    assert [p for p, _, _ in points["top_left"]] == [(0.0, 0.0), (0.0, 0.0)]
    with pytest.raises(SaywhyError, match="registered twice"):
        register(TopLeft)


# ----- end to end on the shared tiny synthbirds ------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_noisy_synthbirds) -> dict:
    """The shared tiny synthbirds, its records carrying their true attributes (a copy: the shared one is kept)."""
    from saywhy.data.synthbirds import load_truth

    dataset = tiny_noisy_synthbirds["dataset"]
    truth = load_truth(tiny_noisy_synthbirds["root"])
    attributed = dataclasses.replace(dataset, records=[
        dataclasses.replace(r, attributes=tuple(truth["images"][r.image_id]["attributes"])) for r in dataset.records])
    return {**tiny_noisy_synthbirds, "attributed": attributed, "model": tiny_noisy_synthbirds["session"].model}


@pytest.mark.parametrize("crop", ["none", "bbox"])
def test_tiny_pck_run_gives_fractions_for_every_method(tiny, crop):
    dataset, model = tiny["attributed"], tiny["model"]
    preprocess = Preprocess(image_size=32, crop=crop)
    # p(t|f) alphas here (the shared session's evidence-model alphas are grounded below), and a fast fit.
    config = ExplainerConfig(min_df=1, attribute_model="cooccurrence")
    explainer, _ = fit_explainer(dataset, model, preprocess, config, source="attributes", progress=False)
    session = ExplainerSession(explainer, model, preprocess)
    test = dataset.split(train=False)
    documents = [list(r.attributes) for r in test]
    table = grounding_pck(session, test, documents, n_attributes=10, seed=1)
    assert list(table.results) == list_grounding_methods()
    assert len(table.attributes) == 10
    scored = {m: r.scored for m, r in table.results.items()}
    assert len(set(scored.values())) == 1 and scored["proposed"] > 0  # every method scores the same pairs
    for result in table.results.values():
        values = list(result.pck.values())
        assert all(0.0 <= v <= 1.0 for v in values) and values == sorted(values)  # PCK grows with alpha
    json.dumps(table.to_dict())


@pytest.fixture(scope="module")
def tiny_points(tiny) -> dict:
    session, test = tiny["session"], tiny["attributed"].split(train=False)
    documents = [list(r.attributes) for r in test]
    attributes = sorted({t for d in documents for t in d} & set(session.explainer.vocabulary_))[:8]
    return {"session": session, "test": test, "documents": documents, "attributes": attributes,
            "points": grounding_points(session, test, documents, attributes, seed=2, batch_size=16)}


@pytest.mark.parametrize("method", list_grounding_methods())
def test_every_registered_method_grounds_every_pair_inside_the_image_reproducibly(tiny_points, method):
    expected = [(t, r.path) for r, d in zip(tiny_points["test"], tiny_points["documents"])
                for t in dict.fromkeys(d) if t in tiny_points["attributes"]]
    found = tiny_points["points"][method]
    assert [(t, r.path) for _, t, r in found] == expected and expected
    for (x, y), _, record in found:
        width, height = Image.open(record.path).size
        assert 0 <= x <= width and 0 <= y <= height
    again = grounding_points(tiny_points["session"], tiny_points["test"], tiny_points["documents"],
                             tiny_points["attributes"], [method], seed=2)[method]  # other batches, same points
    assert [p for p, _, _ in again] == [p for p, _, _ in found]


def test_grad_cam_peak_is_cam_peak_for_a_pooled_linear_head(tiny_points):
    """The small CNN's head is global average pooling then linear: Grad-CAM's weights are W[c] / (h*w)."""
    cam, gradcam = tiny_points["points"]["cam"], tiny_points["points"]["gradcam"]
    session = tiny_points["session"]
    maps = session.activations(tiny_points["test"], keep_maps=True).maps
    positive = {str(r.path) for r, m, z in zip(tiny_points["test"], maps, session.activations(tiny_points["test"]).logits)
                if attribute_scores(m, session.explainer.head_weights_[z.argmax()]).max() > 0}
    same = [a[0] == b[0] for a, b in zip(cam, gradcam) if str(a[2].path) in positive]
    assert same and all(same)


def test_ground_one_image_and_write_its_overlay(tiny, tmp_path):
    session = tiny["session"]
    explainer = session.explainer
    test = tiny["dataset"].split(train=False)
    record = test[0]
    wanted = [explainer.vocabulary_[0], explainer.vocabulary_[1]]
    grounding = ground(session, record.path, wanted)
    assert grounding.heatmaps.shape == (2, 4, 4)  # 32 px input, three 2x poolings
    assert grounding.image_size == (64, 64)
    peaks = grounding.peaks()
    assert peaks.shape == (2, 2) and ((peaks % 16) == 8).all()  # centres of 16 px cells
    out = overlay_figure(Image.open(record.path), [grounding.upsampled(i) for i in range(2)], wanted,
                         tmp_path / "overlay.png", peaks=peaks.tolist())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    figure = filter_figure(explainer, session, test, filter_index=3, k=4)
    assert len(figure["attributes"]) == 4 and len(figure["images"]) == 4
    activations = [image["activation"] for image in figure["images"]]
    assert activations == sorted(activations, reverse=True)
    assert [a["p"] for a in figure["attributes"]] == sorted((a["p"] for a in figure["attributes"]), reverse=True)
    bars = explainer.unnormalized_filter_pdf(3)
    assert [a["unnormalized"] for a in figure["attributes"]] == [bars[explainer.vocabulary_.index(a["attribute"])]
                                                                  for a in figure["attributes"]]
    json.dumps(figure)
    with pytest.raises(SaywhyError, match="out of range"):
        filter_figure(explainer, session, [record], filter_index=10_000)
    with pytest.raises(SaywhyError, match="not fitted"):
        filter_figure(Explainer(), session, [record], filter_index=0)


def test_cli_ground_writes_a_png_and_refuses_unknown_attributes(tiny, tmp_path, capsys):
    image = tiny["dataset"].split(train=False)[0].path
    attribute = tiny["session"].explainer.vocabulary_[0]
    home = ["--home", str(tmp_path / "home")]
    assert main(home + ["ground", str(image), "-a", attribute, "--explainer", str(tiny["exp"]),
                        "--out", str(tmp_path / "o.png"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG" and set(printed["peaks"]) == {attribute}
    assert main(home + ["ground", str(image), "-a", attribute + "x", "--explainer", str(tiny["exp"])]) == 1
    error = capsys.readouterr().err.strip()
    assert f"closest: {attribute}" in error and "\n" not in error


def test_overlay_refuses_a_heatmap_of_the_wrong_size(tmp_path):
    with pytest.raises(SaywhyError, match="upsample it first"):
        overlay_figure(Image.new("RGB", (8, 6)), [np.zeros((8, 8))], ["red crown"], tmp_path / "o.png")
