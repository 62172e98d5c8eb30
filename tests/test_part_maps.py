"""Part maps learned from training keypoints: where each part is on the final maps, and whether it shows."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from saywhy.core.part_maps import NOT_ANNOTATED, PartMaps
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig

H = W = 5
PARTS = ["crown", "tail"]
CELL = {"crown": (0, 1), "tail": (4, 3)}


def planted(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps of 6 filters on a 5 x 5 grid: filter 0 fires at the crown's cell, filter 1 at the tail's,
    filters 2-5 are noise everywhere. The tail is hidden (and filter 1 silent) in every other image;
    the crown's cell moves by one row in half the images so that location, not a constant, is learned."""
    rng = np.random.default_rng(seed)
    maps = rng.uniform(0, 1, (n, 6, H, W))
    maps[:, :2] = rng.uniform(0, 0.2, (n, 2, H, W))
    cells = np.zeros((n, 2, 2), np.int64)
    visible = np.ones((n, 2), np.int64)
    for i in range(n):
        r, c = CELL["crown"]
        r += i % 2
        maps[i, 0, r, c] = 3.0
        cells[i, 0] = (r, c)
        cells[i, 1] = CELL["tail"]
        if i % 4 < 2:
            visible[i, 1] = 0
        else:
            maps[i, 1, CELL["tail"][0], CELL["tail"][1]] = 3.0
    return maps, cells, visible


def test_the_fitted_map_peaks_at_the_planted_part_cell():
    maps, cells, visible = planted()
    pm = PartMaps().fit(maps, cells, visible, PARTS)
    test, test_cells, test_visible = planted(8, seed=1)
    for i in range(8):
        scores = pm.part_scores(test[i])
        assert np.unravel_index(scores[0].argmax(), (H, W)) == tuple(test_cells[i, 0])
        if test_visible[i, 1]:
            assert np.unravel_index(scores[1].argmax(), (H, W)) == CELL["tail"]
    assert pm.location_weights_[0, 0] > 0 and abs(pm.location_weights_[0, 0]) > 3 * np.abs(pm.location_weights_[0, 2:]).max()


def test_visibility_is_low_where_the_part_is_hidden_and_high_where_it_shows():
    maps, cells, visible = planted()
    pm = PartMaps().fit(maps, cells, visible, PARTS)
    test, _, test_visible = planted(8, seed=1)
    p = pm.visibility(test.mean(axis=(2, 3)))
    assert (p[test_visible[:, 1] == 0, 1] < 0.2).all() and (p[test_visible[:, 1] == 1, 1] > 0.8).all()
    assert (p[:, 0] > 0.9).all()  # always visible in training: the base rate (clipped below 1)


def test_a_part_never_annotated_keeps_zero_weights_and_stays_finite():
    maps, cells, visible = planted(12)
    visible[:, 1] = NOT_ANNOTATED
    pm = PartMaps().fit(maps, cells, visible, PARTS)
    assert not pm.location_weights_[1].any() and pm.positives_[1] == 0 and np.isfinite(pm.visibility(maps.mean((2, 3)))).all()


@pytest.mark.parametrize("kwargs", [{"l2": 0}, {"l2": float("nan")}, {"positive_weight": -1}, {"max_iter": 0}])
def test_bad_parameters_are_refused_in_one_line(kwargs):
    with pytest.raises(SaywhyError, match="part maps"):
        PartMaps(**kwargs)


def test_unfitted_and_mismatched_inputs_are_refused():
    with pytest.raises(SaywhyError, match="not fitted"):
        PartMaps().part_scores(np.zeros((6, H, W)))
    maps, cells, visible = planted(8)
    with pytest.raises(SaywhyError, match="cells of shape"):
        PartMaps().fit(maps, cells[:, :1], visible, PARTS)
    maps[0, 0, 0, 0] = np.nan
    with pytest.raises(SaywhyError, match="NaN"):
        PartMaps().fit(maps, cells, visible, PARTS)


# ----- in the explainer --------------------------------------------------------------------
def explainer_with_parts(part_visibility: bool = True) -> tuple[Explainer, np.ndarray, np.ndarray]:
    """An explainer whose attributes "red tail" and "red crown" both ride on the red filter 2, and part maps
    saying the tail shows only where filter 1 fires."""
    maps, cells, visible = planted()
    n = len(maps)
    red = np.arange(n) % 3 != 0
    maps[red, 2] += 2.0  # a "red" filter, everywhere on red birds
    pooled = maps.mean(axis=(2, 3))
    vocabulary = ["red crown", "red tail", "small bird"]
    counts = sp.csr_matrix(np.column_stack([red, red, np.arange(n) % 2]).astype(float))
    explainer = Explainer(ExplainerConfig(top_k=3, min_df=1, part_visibility=part_visibility, visibility_source="pooled",
                                          visibility_threshold=0.0)).fit(
        pooled, counts, vocabulary, np.ones((2, 6)) * [[1], [-1]], ["001.A", "002.B"])
    pm = PartMaps().fit(maps, cells, visible, PARTS)
    explainer.set_part_maps(pm, {"red crown": ["crown"], "red tail": ["tail"]}, {"images": n})
    return explainer, maps, visible


def test_a_hidden_part_lowers_the_attributes_shown_score_and_keeps_it_out_of_the_sentence():
    gated, maps, visible = explainer_with_parts(True)
    plain, _, _ = explainer_with_parts(False)
    pooled = maps.mean(axis=(2, 3))
    hidden = np.flatnonzero(visible[:, 1] == 0)
    shown = np.flatnonzero(visible[:, 1] == 1)
    tail = gated.vocabulary_.index("red tail")
    g, p = gated.readable_scores(pooled), plain.readable_scores(pooled)
    assert (g[hidden, tail] < 0.2 * p[hidden, tail]).all()
    assert np.allclose(g[shown, tail], p[shown, tail], rtol=0.2)
    assert np.allclose(g[:, gated.vocabulary_.index("small bird")], p[:, plain.vocabulary_.index("small bird")])
    for i, e in zip(hidden, gated.explain(pooled[hidden])):
        names = [t for t, _ in e.attributes]
        assert "red tail" not in names[:1], names  # never first; cited at most with its lowered score
        if "red tail" in names:
            assert dict(e.attributes)["red tail"] < 0.2 * p[i, tail]


def test_part_heatmaps_give_each_attribute_its_parts_map_and_mark_the_rest():
    explainer, maps, _ = explainer_with_parts()
    scores, known = explainer.part_heatmaps(maps[0], ["red crown", "small bird", "red tail"])
    assert known.tolist() == [True, False, True] and not scores[1].any()
    assert np.unravel_index(scores[0].argmax(), (H, W)) == (0, 1)


def test_an_explainer_with_part_maps_round_trips(tmp_path):
    explainer, maps, _ = explainer_with_parts()
    pooled = maps.mean(axis=(2, 3))
    loaded = Explainer.load(explainer.save(tmp_path / "exp"))
    assert loaded.has_part_maps and loaded.attribute_parts_ == explainer.attribute_parts_
    assert np.array_equal(loaded.readable_scores(pooled), explainer.readable_scores(pooled))
    assert np.array_equal(loaded.part_heatmaps(maps[0], ["red tail"])[0], explainer.part_heatmaps(maps[0], ["red tail"])[0])
    assert [e.sentence for e in loaded.explain(pooled)] == [e.sentence for e in explainer.explain(pooled)]


def test_an_explainer_without_part_maps_saves_and_loads_as_before(tmp_path):
    explainer, maps, _ = explainer_with_parts()
    pooled = maps.mean(axis=(2, 3))
    plain = Explainer(explainer.config).fit(pooled, sp.csr_matrix(np.ones((len(pooled), 1))), ["red crown"],
                                            np.ones((2, 6)), ["001.A", "002.B"])
    folder = plain.save(tmp_path / "plain")
    assert "part_maps" not in json.loads((folder / "explainer.json").read_text())
    loaded = Explainer.load(folder)
    assert not loaded.has_part_maps and np.array_equal(loaded.attribute_visibility(pooled), np.ones((len(pooled), 1)))
    assert np.array_equal(loaded.readable_scores(pooled), plain.readable_scores(pooled))


def test_edited_part_maps_are_caught_by_the_digest(tmp_path):
    explainer, _, _ = explainer_with_parts()
    folder = explainer.save(tmp_path / "exp")
    meta = json.loads((folder / "explainer.json").read_text())
    meta["part_maps"]["attribute_parts"]["red crown"] = ["tail"]
    (folder / "explainer.json").write_text(json.dumps(meta))
    with pytest.raises(SaywhyError, match="edited"):
        Explainer.load(folder)


def test_part_visibility_must_be_a_boolean():
    with pytest.raises(SaywhyError, match="part visibility"):
        ExplainerConfig(part_visibility="yes")


def test_the_explainers_part_grounding_uses_the_part_map_for_part_attributes_only():
    from saywhy.core.part_maps import PART_GROUNDINGS
    from saywhy.explain.options import PART_GROUNDINGS as NAMES

    assert NAMES == PART_GROUNDINGS
    explainer, maps, _ = explainer_with_parts()
    alpha = np.eye(3, 6)  # "red crown" -> filter 0, "red tail" -> filter 1, "small bird" -> filter 2
    terms = ["red crown", "red tail", "small bird"]
    import copy
    import dataclasses

    plain, mapped = copy.copy(explainer), copy.copy(explainer)
    plain.config = dataclasses.replace(explainer.config, part_grounding="none")
    mapped.config = dataclasses.replace(explainer.config, part_grounding="maps")
    assert ExplainerConfig().part_grounding == "maps" and ExplainerConfig.paper().part_grounding == "none"
    eq9 = plain.grounding_scores(maps[6], alpha, terms)
    assert np.allclose(eq9, np.einsum("tf,fhw->thw", alpha, maps[6]))
    scores = mapped.grounding_scores(maps[6], np.eye(3, 6)[[2, 2, 2]], terms)  # alpha says "red filter" for all
    assert np.unravel_index(scores[0].argmax(), (H, W)) == CELL["crown"]  # image 6 shows both parts
    assert np.unravel_index(scores[1].argmax(), (H, W)) == CELL["tail"]
    assert np.allclose(scores[2], eq9[2])


def test_fit_part_maps_on_a_real_network_attaches_maps_used_by_grounding_and_explain(tiny_noisy_synthbirds, tmp_path):
    import copy

    from saywhy.apps.grounding import grounding_pck
    from saywhy.pipeline import ExplainerSession, fit_part_maps

    session, dataset = tiny_noisy_synthbirds["session"], tiny_noisy_synthbirds["dataset"]
    explainer = copy.copy(session.explainer)  # the shared fixture stays as it is
    train = dataset.split(train=True)
    assert fit_part_maps(explainer, session.model, session.preprocess, [], max_images=10) is None
    fitted = fit_part_maps(explainer, session.model, session.preprocess, train, max_images=30, seed=1)
    assert fitted is explainer and explainer.has_part_maps and not session.explainer.has_part_maps
    assert set(explainer.part_maps_.parts_) == {name for r in train for name in r.keypoints}
    assert explainer.part_maps_settings_["images"] == 30
    part_terms = [t for t in explainer.vocabulary_ if t in explainer.attribute_parts_]
    assert part_terms and all(explainer.attribute_parts_[t] for t in part_terms)
    loaded = Explainer.load(explainer.save(tmp_path / "exp"))
    test = dataset.split(train=False)
    ours = ExplainerSession(loaded, session.model, session.preprocess)
    docs = [list(explainer.attribute_parts_)[:3]] * len(test)
    table = grounding_pck(ours, test, docs, methods=("proposed", "part_maps", "part_maps_alpha"))
    assert table.results["part_maps"].scored > 0
    pooled = ours.activations(test).pooled
    visibility = loaded.attribute_visibility(pooled)
    assert ((0 <= visibility) & (visibility <= 1)).all() and (visibility[:, [loaded.vocabulary_.index(t) for t in part_terms]] < 1).any()


def test_occlusion_reads_the_gated_scores_the_explanation_shows_and_ranks_by():
    from saywhy.apps.occlusion import _ranking_scores

    gated, maps, _ = explainer_with_parts(True)
    plain, _, _ = explainer_with_parts(False)
    pooled = maps.mean(axis=(2, 3))
    classes = gated.predict(pooled)
    visibility = gated.attribute_visibility(pooled)
    assert gated.gates_visibility and not plain.gates_visibility
    assert np.allclose(_ranking_scores(gated, pooled, classes),
                       _ranking_scores(plain, pooled, classes) + np.log(np.maximum(visibility, 1e-12)))
    assert np.allclose(gated.readable_scores(pooled, classes), plain.readable_scores(pooled, classes) * visibility)


def test_one_cell_maps_fit_without_dividing_by_zero():
    """A network whose final map is 1 x 1 (every keypoint in the only cell): nothing to locate, finite weights."""
    from saywhy.core.part_maps import PartMaps

    rng = np.random.default_rng(0)
    maps = rng.gamma(2.0, size=(12, 8, 1, 1))
    cells = np.zeros((12, 1, 2), dtype=int)
    visible = np.ones((12, 1), dtype=int)
    fitted = PartMaps().fit(maps, cells, visible, ["crown"])
    assert np.isfinite(fitted.location_weights_).all() and np.isfinite(fitted.visibility_weights_).all()


def test_part_map_activations_fill_the_feature_cache_so_a_cold_fit_runs_each_image_once(tiny_noisy_synthbirds, tmp_path):
    import copy

    from saywhy.model.feature_cache import FeatureCache
    from saywhy.pipeline import fit_part_maps, part_map_activations, part_map_records

    session, dataset = tiny_noisy_synthbirds["session"], tiny_noisy_synthbirds["dataset"]
    train = dataset.split(train=True)
    sample = part_map_records(train, max_images=len(train) // 2, seed=3)
    assert 0 < len(sample) < len(train) and sample == part_map_records(train, max_images=len(train) // 2, seed=3)
    cache = FeatureCache(tmp_path / "features")
    acts = part_map_activations(session.model, train, session.preprocess, session.layers, cache)
    assert acts.maps is not None and acts.n_items == len(part_map_records(train))
    assert cache.add(session.model, [train[0]], session.preprocess, session.layers, acts.pooled[:1] * 0 + 1) == 0  # kept
    got = cache.pooled(session.model, train, session.preprocess, session.layers, progress=False)
    with_keypoints = sum(bool(r.keypoints) for r in train)
    assert got.n_cached == with_keypoints and got.n_computed == len(train) - with_keypoints  # the sample is not run again
    direct = session.activations(train).pooled
    np.testing.assert_allclose(got.pooled, direct, rtol=1e-5, atol=1e-6)
    given = fit_part_maps(copy.copy(session.explainer), session.model, session.preprocess, train, activations=acts)
    own = fit_part_maps(copy.copy(session.explainer), session.model, session.preprocess, train)
    np.testing.assert_allclose(given.part_maps_.location_weights_, own.part_maps_.location_weights_, rtol=1e-6, atol=1e-9)
    with pytest.raises(SaywhyError, match="part maps need the maps"):
        fit_part_maps(copy.copy(session.explainer), session.model, session.preprocess, train, max_images=2, activations=acts)


def test_the_joint_location_fit_finds_each_parts_own_optimum():
    """fit_logistics solves the regressions together with exactly fit_logistic's objective for each one."""
    from saywhy.core.part_maps import fit_logistic, fit_logistics

    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, (400, 6)).astype(np.float32)
    x[:, 5] = 3.0  # a constant column is held at weight 0 by both
    y = np.stack([(x[:, 0] + rng.normal(0, 0.5, 400) > 2.5), (x[:, 1] - x[:, 2] > 0)], axis=1).astype(float)
    weight = np.where(y > 0, 3.0, 1.0)
    weight[:100, 1] = 0.0  # regression 1 ignores the first 100 rows (images that do not annotate its part)
    joint_w, joint_b = fit_logistics(x, y, 1e-2, weight, max_iter=500)
    for p in range(2):
        rows = weight[:, p] > 0
        w, b = fit_logistic(x[rows], y[rows, p], 1e-2, weight[rows, p], max_iter=500)
        np.testing.assert_allclose(joint_w[p], w, rtol=1e-3, atol=1e-4)
        assert abs(joint_b[p] - b) < 1e-3 and joint_w[p, 5] == 0.0
