"""Part visibility read from the peak of the part's location map (ExplainerConfig.visibility_source="peak").

Synthetic maps with a known answer: filter 0 marks the crown, at one cell (3.0) where it shows;
where it is hidden, filter 0 is spread over every cell at a ninth of that (1/3), so its spatial
mean is the same either way. Filter 2 ("red") fires at the crown's cell on the images whose
captions say "red crown", hidden crown or not. The logistic on the mean (source "pooled") cannot
tell a hidden crown from a shown one; the location map's peak can, so a threshold on it stops
citing "red crown" on exactly the images that hide it.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from saywhy.core.part_maps import PartMaps
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig

TERMS = ["red crown", "white belly", "small bird"]
PARTS = {"red crown": ["crown"], "white belly": ["belly"]}


def synthetic(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    maps = rng.normal(0.0, 0.02, size=(n, 4, 3, 3)).clip(min=0)
    crown = rng.integers(0, 3, size=(n, 2))
    belly = (crown + 1 + rng.integers(0, 2, size=(n, 2))) % 3
    hidden = rng.random(n) < 1 / 3  # the crown is annotated hidden on a third of the images
    red = rng.random(n) < 0.5
    for i in range(n):
        if hidden[i]:
            maps[i, 0] += 1.0 / 3.0  # the same mean as one cell at 3.0, but no peak
        else:
            maps[i, 0, crown[i, 0], crown[i, 1]] += 3.0
        maps[i, 1, belly[i, 0], belly[i, 1]] += 3.0
        if red[i]:
            maps[i, 2, crown[i, 0], crown[i, 1]] += 2.0
        maps[i, 3] += 1.0
    counts = np.zeros((n, 3))
    counts[red, 0] = 1
    counts[rng.random(n) < 0.5, 1] = 1
    counts[:, 2] = 1
    visible = np.ones((n, 2), int)
    visible[hidden, 0] = 0
    return maps, sp.csr_matrix(counts), np.stack([crown, belly], axis=1), visible, hidden


def fitted(**changes):
    maps, counts, cells, visible, hidden = synthetic()
    pooled = maps.mean(axis=(2, 3))
    # the logistic on the mean and no threshold unless a test asks: what these tests set against the peak
    config = ExplainerConfig(**{"min_df": 1, "top_k": 3, "evidence_l2": 1e-4, "sentence": "paper",
                                "visibility_source": "pooled", "visibility_threshold": 0.0, **changes})
    explainer = Explainer(config).fit(pooled, counts, TERMS, weights=np.array([[0.0, 0.0, 1.0, 1.0]]),
                                      class_names=["Bird"])
    explainer.set_part_maps(PartMaps(l2=0.1).fit(maps, cells, visible, ["crown", "belly"]), PARTS)
    return explainer, maps, pooled, hidden


def cites_crown(explainer, activations) -> np.ndarray:
    return np.array(["red crown" in [t for t, _ in e.attributes] for e in explainer.explain(activations)])


def test_the_peak_tells_a_hidden_part_from_a_shown_one_where_the_mean_cannot():
    peak, maps, pooled, hidden = fitted(visibility_source="peak")
    crown = peak.part_maps_.parts_.index("crown")
    by_peak = peak.part_maps_.peak_visibility(peak.part_maps_.peak_log_odds(maps))[:, crown]
    by_mean = peak.part_maps_.visibility(pooled)[:, crown]
    assert by_peak[hidden].max() < 0.5 < by_peak[~hidden].min()
    assert np.mean(by_mean[hidden] > 0.5) > 0.75  # the mean says "shown" for most hidden crowns


def test_a_threshold_on_the_peak_drops_the_hidden_crown_and_only_it():
    plain, maps, pooled, hidden = fitted()
    pooled_gate, _, _, _ = fitted(visibility_threshold=0.5)
    peak_gate, _, _, _ = fitted(visibility_threshold=0.5, visibility_source="peak")
    before = cites_crown(plain, pooled)
    assert before[hidden].sum() > 30  # without a gate the hidden crown is cited
    assert cites_crown(pooled_gate, pooled)[hidden].sum() > 0.75 * before[hidden].sum()  # the mean's gate hardly helps
    after = cites_crown(peak_gate, peak_gate.map_activations(maps, pooled))
    assert not after[hidden].any()
    np.testing.assert_array_equal(after[~hidden], before[~hidden])
    # the shown scores of what is still cited are unchanged
    kept = {t: s for t, s in plain.explain(pooled[:1])[0].attributes}
    assert all(np.isclose(kept[t], s) for t, s in peak_gate.explain(peak_gate.map_activations(maps[:1], pooled[:1]))[0]
               .attributes)


def test_search_and_retrieval_call_in_the_explanation_only_what_it_cites():
    """The set decision of search and Table 2 is the explanation's citations (cited_mask), so a hidden crown
    left out by the threshold is not "in the explanation" either, though its score still ranks it."""
    from saywhy.apps.retrieval import evaluate_attribute_retrieval
    from saywhy.search import rank_images, top_k_mask

    peak_gate, maps, pooled, hidden = fitted(visibility_threshold=0.5, visibility_source="peak")
    activations = peak_gate.map_activations(maps, pooled)
    explained = peak_gate.explain(activations)
    cited = peak_gate.cited_mask(activations)
    assert cited.tolist() == [[t in [a for a, _ in e.attributes] for t in TERMS] for e in explained]
    crown = TERMS.index("red crown")
    on_top = top_k_mask(peak_gate.attribute_log_pdf(activations), 3)[:, crown]
    assert on_top[hidden].sum() > 30 and not cited[hidden, crown].any()  # the top k names it; the sentence does not
    _, _, in_explanation = rank_images(peak_gate, activations, ["red crown"])
    assert in_explanation.tolist() == cited[:, crown].tolist()
    documents = [["red crown"] if c else ["small bird"] for c in cited[:, crown]]
    report = evaluate_attribute_retrieval(peak_gate, activations, documents, n_attributes=2).report
    column = report.attributes.index("red crown")
    assert report.method.counts["fp"][column] == 0 and report.method.counts["fn"][column] == 0
    # one class for every image, or one per image, as explain() takes them
    assert peak_gate.cited_mask(activations, "Bird").tolist() == cited.tolist()


def test_the_activations_carry_one_peak_per_part_after_the_pooled_filters():
    explainer, maps, pooled, _ = fitted(visibility_source="peak", visibility_threshold=0.5)
    assert explainer.reads_peaks and explainer.reads_maps and not explainer.pools_parts
    features = explainer.map_activations(maps, pooled)
    assert features.shape == (len(maps), 4 + 2) and explainer.activation_width_ == 6
    np.testing.assert_allclose(features[:, :4], pooled)
    np.testing.assert_allclose(features[:, 4:], explainer.part_maps_.peak_log_odds(maps))
    np.testing.assert_allclose(explainer.readable_scores(features), explainer.readable_scores(pooled))
    np.testing.assert_allclose(explainer.decision_function(features), explainer.decision_function(pooled))
    with pytest.raises(SaywhyError, match="peaks, which these activations lack"):
        explainer.explain(pooled)  # never the mean's visibility in place of the peaks
    with pytest.raises(SaywhyError, match="expects \\(images, 6\\)"):
        explainer.explain(features[:, :5])


def test_without_part_maps_or_with_the_pooled_source_nothing_is_added():
    explainer, maps, pooled, _ = fitted()
    assert not explainer.reads_maps and explainer.activation_width_ == 4
    np.testing.assert_array_equal(explainer.map_activations(maps, pooled), pooled)


def test_with_part_pooling_the_peaks_follow_the_part_pools():
    explainer, maps, pooled, hidden = fitted(visibility_source="peak", visibility_threshold=0.5, evidence_pooling="part")
    explainer.fit_part_evidence(explainer.part_pools(maps, pooled), synthetic()[1])
    features = explainer.map_activations(maps, pooled)
    assert features.shape == (len(maps), 4 * 3 + 2) and explainer.activation_width_ == 14
    assert not cites_crown(explainer, features)[hidden].any()
    assert explainer.describe("Bird").sentence


def test_saved_and_loaded_it_reads_the_peaks_the_same(tmp_path):
    explainer, maps, pooled, _ = fitted(visibility_source="peak", visibility_threshold=0.5)
    loaded = Explainer.load(explainer.save(tmp_path / "exp"))
    assert loaded.config.visibility_source == "peak" and loaded.reads_peaks
    features = explainer.map_activations(maps, pooled)
    np.testing.assert_allclose(loaded.map_activations(maps, pooled), features)
    assert [e.to_dict() for e in loaded.explain(features)] == [e.to_dict() for e in explainer.explain(features)]


def test_non_finite_maps_never_reach_an_explanation():
    explainer, maps, pooled, _ = fitted(visibility_source="peak", visibility_threshold=0.5)
    bad = maps[:2].copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(SaywhyError, match="NaN or infinite"):
        explainer.explain(explainer.map_activations(bad, pooled[:2]))


@pytest.mark.parametrize("value", ["max", "", None, 1])
def test_config_refuses_other_sources(value):
    with pytest.raises(SaywhyError, match="visibility source"):
        ExplainerConfig(visibility_source=value)


def test_the_source_is_part_of_the_saved_config_and_the_paper_keeps_the_mean():
    assert ExplainerConfig().visibility_source == "peak" and ExplainerConfig.paper().visibility_source == "pooled"
    assert ExplainerConfig(visibility_source="pooled") != ExplainerConfig()
    assert ExplainerConfig.from_dict({"visibility_source": "peak"}).visibility_source == "peak"


def test_fit_takes_the_flag_and_refuses_it_without_part_maps(tmp_path):
    import argparse

    from saywhy.cli import fit

    parser = argparse.ArgumentParser()
    fit.register(parser.add_subparsers())
    base = ["fit", "--model", "m", "--root", "r", "--out", str(tmp_path / "x")]
    config = fit.config_from(parser.parse_args([*base, "--visibility-source", "peak", "--visibility-threshold", "0.8"]))
    assert config.visibility_source == "peak" and config.visibility_threshold == 0.8
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--visibility-source", "max"])
    with pytest.raises(SaywhyError, match="reads the part maps"):
        fit.run(parser.parse_args([*base, "--visibility-source", "peak", "--no-part-maps"]))


def test_a_session_reads_the_peaks_from_one_forward_pass_then_from_the_cache(tiny_noisy_synthbirds, tmp_path,
                                                                                  monkeypatch):
    import copy
    import dataclasses

    from saywhy.model.feature_cache import FeatureCache, MapRows
    from saywhy.pipeline import ExplainerSession, fit_part_maps

    tiny = tiny_noisy_synthbirds
    session, dataset = tiny["session"], tiny["dataset"]
    explainer = copy.copy(session.explainer)  # the fixture's fitted state, untouched: part maps go on a copy
    explainer.config = dataclasses.replace(explainer.config, visibility_source="peak", visibility_threshold=0.5)
    assert fit_part_maps(explainer, session.model, session.preprocess, dataset.split(train=True)) is explainer
    assert explainer.reads_maps and explainer.activation_width_ == explainer.n_filters_ + len(explainer.part_maps_.parts_)
    test = dataset.split(train=False)[:6]
    cache = FeatureCache(tmp_path / "cache")
    cached = ExplainerSession(explainer, session.model, session.preprocess, cache)
    computed = cached.activations(test)  # one forward pass with the maps; the rows made from them are kept
    _no_forward_pass(monkeypatch)
    acts = cached.activations(test)  # served from the cache's folder for exactly these part maps
    np.testing.assert_array_equal(acts.pooled, computed.pooled)
    monkeypatch.undo()
    moved = copy.copy(explainer)  # other part maps: other rows, never these
    moved.part_maps_ = copy.deepcopy(explainer.part_maps_)
    moved.part_maps_.location_bias_ = moved.part_maps_.location_bias_ + 1.0
    assert moved.map_rows_key() != explainer.map_rows_key()
    rows = [MapRows(e.map_rows_key(), e.activation_width_, e.map_activations) for e in (explainer, moved)]
    folders = {cache.model_folder(session.model, session.preprocess, cached.layers, r) for r in [None, *rows]}
    assert len(folders) == 3  # phi(x), these rows, the other explainer's rows: three folders
    assert acts.pooled.shape == (len(test), explainer.activation_width_)
    first = [e.to_dict() for e in cached.explain(test)]
    assert first == [e.to_dict() for e in ExplainerSession(explainer, session.model, session.preprocess).explain(test)]
    loaded = Explainer.load(explainer.save(tmp_path / "exp"))
    assert [e.to_dict() for e in ExplainerSession(loaded, session.model, session.preprocess, cache).explain(test)] == first
    one = cached.explain(test[0], heatmaps=True)[0]
    assert one.heatmaps is not None and one.sentence == first[0]["sentence"]


def _no_forward_pass(monkeypatch):
    import saywhy.model.feature_cache as feature_cache

    def refuse(*args, **kwargs):
        raise AssertionError("a forward pass where the feature cache holds the rows")

    monkeypatch.setattr(feature_cache, "extract_activations", refuse)


def test_the_agreed_source_is_the_smaller_of_the_peak_and_the_mean():
    agreed, maps, pooled, hidden = fitted(visibility_source="both", visibility_threshold=0.5)
    peak, _, _, _ = fitted(visibility_source="peak", visibility_threshold=0.5)
    assert agreed.reads_peaks and agreed.activation_width_ == peak.activation_width_
    features = agreed.map_activations(maps, pooled)
    np.testing.assert_array_equal(features, peak.map_activations(maps, pooled))  # the same cached rows
    parts = [agreed.part_maps_.parts_.index(PARTS[t][0]) for t in TERMS[:2]]
    by_peak = agreed.part_maps_.peak_visibility(features[:, 4:])[:, parts]
    by_mean = agreed.part_maps_.visibility(pooled)[:, parts]
    np.testing.assert_allclose(agreed.attribute_visibility(features)[:, :2], np.minimum(by_peak, by_mean))
    np.testing.assert_allclose(agreed.attribute_visibility(features)[:, 2], 1.0)  # "small bird" names no part
    assert not cites_crown(agreed, features)[hidden].any()  # never more than the peak alone lets through
    assert cites_crown(agreed, features).sum() <= cites_crown(peak, features).sum()
