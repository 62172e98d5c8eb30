"""Attribute grounding (eq. 9): hand-set maps, exact geometry, Grad-CAM hooks, a tiny end-to-end run."""
import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from PIL import Image
from torch import nn

from saywhy.apps.grounding import (
    METHODS,
    attribute_alphas,
    crop_box,
    filter_figure,
    grad_cam_scores,
    ground,
    grounding_pck,
    keep_output,
)
from saywhy.cli import main
from saywhy.core.grounding import (
    attribute_heatmaps,
    attribute_scores,
    cells_to_image,
    normalize_heatmaps,
    peak_cells,
    refine_peaks,
    upsample_heatmap,
)
from saywhy.data.cub import read_cub
from saywhy.data.images import Preprocess
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig
from saywhy.model.smallcnn import SmallCNN
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
    heatmaps = attribute_heatmaps(_two_filter_maps(), pdf.T)
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


def test_refined_peak_is_the_parabola_vertex():
    heatmap = np.zeros((1, 3, 5))
    heatmap[0, 1, 1:4] = [1.0, 3.0, 2.0]  # vertex at 2 + 0.5 * (1 - 2) / (1 - 6 + 2) = 2 + 1/6
    heatmap[0, 0, 2] = heatmap[0, 2, 2] = 1.0  # symmetric along rows: no shift
    refined = refine_peaks(heatmap, peak_cells(heatmap))
    assert refined[0, 0] == 1.0
    assert refined[0, 1] == pytest.approx(2 + 1 / 6)


# ----- geometry ----------------------------------------------------------------------------------
def test_cell_centre_maps_to_the_right_pixel_without_crop():
    # 8x8 maps of a 128 px image: 16 px cells, cell (2, 3) centred at x = 3.5 * 16, y = 2.5 * 16.
    assert cells_to_image(np.array([2, 3]), (8, 8), (0, 0, 128, 128)).tolist() == [56.0, 40.0]
    # A non-square image is stretched to a square input: x and y scale differently.
    assert cells_to_image(np.array([2, 3]), (8, 8), (0, 0, 160, 96)).tolist() == [70.0, 30.0]


def test_cell_centre_maps_to_the_right_pixel_with_bbox_crop():
    box = crop_box(Preprocess(crop="bbox"), (100, 100), (10.0, 20.0, 23.5, 40.0))
    assert box == (10, 20, 34, 60)  # int(x), int(y), ceil(x + w), ceil(y + h): 24 x 40 px
    # 3 px per column, 5 px per row: cell (2, 3) -> (10 + 3.5 * 3, 20 + 2.5 * 5).
    assert cells_to_image(np.array([2, 3]), (8, 8), box).tolist() == [20.5, 32.5]
    assert crop_box(Preprocess(crop="none"), (100, 80), (10.0, 20.0, 23.5, 40.0)) == (0, 0, 100, 80)


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
    box = crop_box(preprocess, (40, 30), bbox)
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
        grad_cam_scores(model, "conv", torch.zeros(1, 3, 4, 4))
    assert _hook_count(model) == 0
    with pytest.raises(SaywhyError, match="no layer named"), keep_output(model, "missing"):
        pass
    assert _hook_count(model) == 0


def test_grad_cam_of_a_pooled_linear_head_is_relu_of_cam():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight[:, 0, 0, 0] = torch.tensor([1.0, -1.0])
        head.weight.copy_(torch.tensor([[2.0, 1.0], [0.0, 1.0]]))
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    x = torch.arange(-2.0, 2.0).reshape(1, 1, 2, 2)  # -2, -1, 0, 1
    maps = torch.cat([x, -x], dim=1)[0].numpy()
    # Pooled (-0.5, 0.5): logits (-0.5, 0.5), so class 1 is predicted; class 0 is asked for explicitly.
    cam = (2.0 * maps[0] + 1.0 * maps[1]) / 4  # gradients are W[c] / (h * w)
    got = grad_cam_scores(model, "0", x, classes=[0])[0]
    np.testing.assert_allclose(got, np.maximum(cam, 0), rtol=1e-6)
    predicted = grad_cam_scores(model, "0", x)[0]  # class 1: W = (0, 1)
    np.testing.assert_allclose(predicted, np.maximum(maps[1] / 4, 0), rtol=1e-6)
    assert _hook_count(model) == 0


# ----- end to end on a tiny synthbirds -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from saywhy.data.synthbirds import SynthConfig, generate, load_truth

    root = generate(tmp_path_factory.mktemp("synth") / "birds", SynthConfig(n_images=96, image_size=64, n_species=4),
                    workers=1, progress=False)
    truth = load_truth(root)
    dataset = read_cub(root)
    dataset.records = [dataclasses.replace(r, attributes=tuple(truth["images"][r.image_id]["attributes"]))
                       for r in dataset.records]
    torch.manual_seed(0)
    model = SmallCNN(len(dataset.class_ids)).eval()
    return dataset, truth, model


@pytest.mark.parametrize("crop", ["none", "bbox"])
def test_tiny_pck_run_gives_fractions_for_every_method(tiny, crop):
    dataset, _, model = tiny
    preprocess = Preprocess(image_size=32, crop=crop)
    explainer, _ = fit_explainer(dataset, model, preprocess, ExplainerConfig(min_df=1), source="attributes",
                                 progress=False)
    session = ExplainerSession(explainer, model, preprocess)
    test = dataset.split(train=False)
    documents = [list(r.attributes) for r in test]
    table = grounding_pck(session, test, documents, n_attributes=10, seed=1)
    assert set(table.results) == set(METHODS)
    assert len(table.attributes) == 10
    scored = {m: r.scored for m, r in table.results.items()}
    assert len(set(scored.values())) == 1 and scored["proposed"] > 0  # every method scores the same pairs
    for result in table.results.values():
        values = list(result.pck.values())
        assert all(0.0 <= v <= 1.0 for v in values) and values == sorted(values)  # PCK grows with alpha
    again = grounding_pck(session, test, documents, n_attributes=10, seed=1, methods=["random"])
    assert again.results["random"].pck == table.results["random"].pck
    json.dumps(table.to_dict())


def test_ground_one_image_and_write_its_overlay(tiny, tmp_path):
    dataset, _, model = tiny
    preprocess = Preprocess(image_size=32)
    explainer, _ = fit_explainer(dataset, model, preprocess, ExplainerConfig(min_df=1), source="attributes",
                                 progress=False)
    session = ExplainerSession(explainer, model, preprocess)
    record = dataset.split(train=False)[0]
    wanted = [explainer.vocabulary_[0], explainer.vocabulary_[1]]
    grounding = ground(session, record.path, wanted)
    assert grounding.heatmaps.shape == (2, 4, 4)  # 32 px input, three 2x poolings
    assert grounding.image_size == (64, 64)
    peaks = grounding.peaks()
    assert peaks.shape == (2, 2) and ((peaks % 16) == 8).all()  # centres of 16 px cells
    out = overlay_figure(Image.open(record.path), [grounding.upsampled(i) for i in range(2)], wanted,
                         tmp_path / "overlay.png", peaks=peaks.tolist())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    figure = filter_figure(explainer, session, dataset.split(train=False), filter_index=3, k=4)
    assert len(figure["attributes"]) == 4 and len(figure["images"]) == 4
    activations = [image["activation"] for image in figure["images"]]
    assert activations == sorted(activations, reverse=True)
    assert [a["p"] for a in figure["attributes"]] == sorted((a["p"] for a in figure["attributes"]), reverse=True)
    json.dumps(figure)
    with pytest.raises(SaywhyError, match="out of range"):
        filter_figure(explainer, session, [record], filter_index=10_000)


def test_cli_ground_writes_a_png_and_refuses_unknown_attributes(tiny, tmp_path, capsys):
    from saywhy.model.checkpoint import save_checkpoint

    dataset, _, model = tiny
    preprocess = Preprocess(image_size=32)
    save_checkpoint(tmp_path / "model", model, {"arch": "saywhy:smallcnn", "arch_kwargs": {},
                                                "classes": [dataset.class_names[c] for c in dataset.class_ids],
                                                "preprocess": preprocess.to_dict()})
    explainer, _ = fit_explainer(dataset, model, preprocess, ExplainerConfig(min_df=1), source="attributes",
                                 progress=False, metadata={"checkpoint": str(tmp_path / "model")})
    explainer.save(tmp_path / "explainer")
    image = dataset.split(train=False)[0].path
    attribute = explainer.vocabulary_[0]
    home = ["--home", str(tmp_path / "home")]
    assert main(home + ["ground", str(image), "-a", attribute, "--explainer", str(tmp_path / "explainer"),
                        "--out", str(tmp_path / "o.png"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG" and set(printed["peaks"]) == {attribute}
    assert main(home + ["ground", str(image), "-a", attribute + "x", "--explainer", str(tmp_path / "explainer")]) == 1
    error = capsys.readouterr().err.strip()
    assert f"closest: {attribute}" in error and "\n" not in error


def test_overlay_refuses_a_heatmap_of_the_wrong_size(tmp_path):
    with pytest.raises(SaywhyError, match="upsample it first"):
        overlay_figure(Image.new("RGB", (8, 6)), [np.zeros((8, 8))], ["red crown"], tmp_path / "o.png")
