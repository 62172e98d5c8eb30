"""Part-pooled evidence (ExplainerConfig.evidence_pooling="part") and the visibility threshold.

Synthetic maps with a known answer: filter 0 marks where the crown is, filter 1 where the belly
is, and filter 2 ("red") fires at exactly one of the two. The captions say "red crown" when it
fires at the crown and "red belly" when at the belly. The global mean of filter 2 is the same
either way, so global pooling cannot tell the two attributes apart; pooling under each part's
location map can.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from saywhy.core.part_maps import PartMaps
from saywhy.core.part_pooling import part_pooled, part_pooling_weights
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig

TERMS = ["red crown", "red belly", "small bird"]
PARTS = {"red crown": ["crown"], "red belly": ["belly"]}


def synthetic(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    maps = rng.normal(0.0, 0.05, size=(n, 4, 3, 3)).clip(min=0)
    crown = rng.integers(0, 3, size=(n, 2))  # each image puts the crown and the belly in its own cell
    belly = (crown + 1 + rng.integers(0, 2, size=(n, 2))) % 3
    at_crown = rng.random(n) < 0.5
    for i in range(n):
        maps[i, 0, crown[i, 0], crown[i, 1]] += 3.0
        maps[i, 1, belly[i, 0], belly[i, 1]] += 3.0
        r, c = crown[i] if at_crown[i] else belly[i]
        maps[i, 2, r, c] += 2.0
        maps[i, 3] += 1.0  # always on: the bird
    counts = np.zeros((n, 3))
    counts[at_crown, 0] = 1
    counts[~at_crown, 1] = 1
    counts[:, 2] = 1
    cells = np.stack([crown, belly], axis=1)
    visible = np.ones((n, 2), int)
    return maps, sp.csr_matrix(counts), cells, visible, at_crown


def fitted(pooling: str = "part", **changes):
    maps, counts, cells, visible, at_crown = synthetic()
    pooled = maps.mean(axis=(2, 3))
    # the logistic on the mean, no threshold: what part pooling alone does (test_visibility_peak.py has the peak)
    config = ExplainerConfig(**{"min_df": 1, "top_k": 2, "evidence_pooling": pooling, "evidence_l2": 1e-4,
                                "sentence": "paper", "visibility_source": "pooled", "visibility_threshold": 0.0, **changes})
    explainer = Explainer(config).fit(pooled, counts, TERMS, weights=np.array([[0.0, 0.0, 1.0, 1.0]]),
                                      class_names=["Bird"])
    part_maps = PartMaps(l2=1e-3).fit(maps, cells, visible, ["crown", "belly"])
    explainer.set_part_maps(part_maps, PARTS)
    if pooling != "global":
        explainer.fit_part_evidence(explainer.part_pools(maps, pooled), counts)
    return explainer, maps, pooled, at_crown


def test_weights_are_a_softmax_over_cells_of_the_groups_largest_log_odds():
    scores = np.zeros((1, 2, 1, 2))
    scores[0, 0, 0, 1], scores[0, 1, 0, 0] = np.log(3.0), np.log(3.0)
    weights = part_pooling_weights(scores, [[0, 1]])  # the group's largest log-odds: log 3 in both cells
    np.testing.assert_allclose(weights, [[[0.5, 0.5]]])
    np.testing.assert_allclose(part_pooled(np.ones((1, 2, 1, 2)), weights), [[[1.0, 1.0]]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weights_and_pools_equal_the_definition_group_by_group(dtype):
    """The weights and pools against the module docstring's definition, written out per image and group."""
    rng = np.random.default_rng(3)
    scores, maps = rng.normal(0, 3, (3, 5, 4, 3)).astype(dtype), rng.random((3, 6, 4, 3)).astype(dtype)
    groups = [[2], [0, 4], [1, 3, 0]]
    weights = part_pooling_weights(scores, groups, temperature=0.5)
    pools = part_pooled(maps, weights)
    assert weights.dtype == pools.dtype == dtype and pools.shape == (3, 3, 6)
    for i in range(3):
        for g, parts in enumerate(groups):
            z = scores[i, parts].astype(np.float64).max(axis=0).ravel() / 0.5
            expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            np.testing.assert_allclose(weights[i, g], expected, rtol=1e-5 if dtype == np.float32 else 1e-12)
            np.testing.assert_allclose(pools[i, g], maps[i].reshape(6, -1) @ expected,
                                       rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("pooling", ["part", "both"])
def test_part_pooling_finds_the_attribute_that_lives_at_one_part(pooling):
    explainer, maps, pooled, at_crown = fitted(pooling)
    features = explainer.part_pools(maps, pooled)
    assert features.shape == (len(maps), 4 * 3)  # phi(x), then the crown's and the belly's pools
    p = explainer.readable_scores(features)
    crown, belly = TERMS.index("red crown"), TERMS.index("red belly")
    assert np.mean((p[:, crown] > p[:, belly]) == at_crown) > 0.95
    if pooling == "both":  # eq. 6's weighting reads the global weights too: the shown score is the test here
        return
    cited = [next(t for t, _ in e.attributes if t != "small bird") for e in explainer.explain(features)]
    assert np.mean([t == ("red crown" if c else "red belly") for t, c in zip(cited, at_crown)]) > 0.95


def test_global_pooling_cannot_tell_them_apart():
    explainer, maps, pooled, at_crown = fitted("global")
    p = explainer.readable_scores(pooled)
    crown, belly = TERMS.index("red crown"), TERMS.index("red belly")
    assert 0.3 < np.mean((p[:, crown] > p[:, belly]) == at_crown) < 0.7


def test_an_attribute_naming_no_part_keeps_the_global_pool():
    part, maps, pooled, _ = fitted("part")
    whole, _, _, _ = fitted("global")
    j = TERMS.index("small bird")
    np.testing.assert_allclose(part.readable_scores(part.part_pools(maps, pooled))[:, j],
                               whole.readable_scores(pooled)[:, j])


def test_scores_need_the_part_pools_but_the_decision_does_not():
    explainer, maps, pooled, _ = fitted("part")
    with pytest.raises(SaywhyError, match="part pools"):
        explainer.explain(pooled)
    np.testing.assert_allclose(explainer.decision_function(pooled),
                               explainer.decision_function(explainer.part_pools(maps, pooled)))


@pytest.mark.parametrize("pooling", ["part", "both"])
def test_saved_and_loaded_it_scores_the_same(tmp_path, pooling):
    explainer, maps, pooled, _ = fitted(pooling)
    features = explainer.part_pools(maps, pooled)
    loaded = Explainer.load(explainer.save(tmp_path / "exp"))
    assert loaded.pools_parts and loaded.config.evidence_pooling == pooling
    np.testing.assert_allclose(loaded.part_pools(maps, pooled), features)
    np.testing.assert_allclose(loaded.readable_scores(features), explainer.readable_scores(features))
    assert loaded.describe("Bird").attributes == explainer.describe("Bird").attributes


def test_global_config_attaches_no_part_pools():
    explainer, maps, pooled, _ = fitted("global")
    assert not explainer.pools_parts
    np.testing.assert_array_equal(explainer.part_pools(maps, pooled), pooled)
    with pytest.raises(SaywhyError, match="part-pooled evidence needs"):
        explainer.fit_part_evidence(pooled, sp.csr_matrix(np.ones((len(pooled), 3))))


@pytest.mark.parametrize("changes", [{"evidence_pooling": "parts"}, {"visibility_threshold": 1.0},
                                     {"visibility_threshold": -0.1}, {"visibility_threshold": True}])
def test_config_refuses_bad_values(changes):
    with pytest.raises(SaywhyError):
        ExplainerConfig(**changes)


def test_the_threshold_drops_a_part_the_image_likely_hides():
    explainer, maps, pooled, at_crown = fitted("global")
    hidden = explainer.attribute_visibility(pooled)
    assert np.allclose(hidden, 1.0, atol=1e-2)  # every part shows in every training image
    # a part map whose visibility says "crown hidden" everywhere
    parts = explainer.part_maps_
    parts.visibility_weights_[0] = 0.0
    parts.visibility_bias_[0] = -5.0
    gated, _, _, _ = fitted("global", visibility_threshold=0.5)
    gated.part_maps_.visibility_weights_[0] = 0.0
    gated.part_maps_.visibility_bias_[0] = -5.0
    assert any("red crown" in [t for t, _ in e.attributes] for e in explainer.explain(pooled))
    explanations = gated.explain(pooled)
    assert all("red crown" not in [t for t, _ in e.attributes] for e in explanations)
    # the shown score of what is still cited is unchanged
    plain = {t: s for t, s in explainer.explain(pooled[:1])[0].attributes}
    assert all(np.isclose(plain.get(t, s), s) for t, s in explanations[0].attributes)


def test_a_session_explains_with_part_pools_from_one_forward_pass_then_from_the_cache(tiny_noisy_synthbirds, tmp_path,
                                                                                        monkeypatch):
    from saywhy.apps.occlusion import occlusion_test
    from saywhy.model.feature_cache import FeatureCache
    from saywhy.pipeline import ExplainerSession, fit_explainer

    fixture = tiny_noisy_synthbirds
    session, dataset = fixture["session"], fixture["dataset"]
    explainer, report = fit_explainer(dataset, session.model, session.preprocess,
                                      ExplainerConfig(min_df=1, evidence_pooling="part", visibility_source="pooled"),
                                      extractor=fixture["extractor"],
                                      progress=False)
    assert explainer.pools_parts and explainer.feature_width_ > explainer.n_filters_
    assert not any("pooled globally" in w for w in report.warnings)
    test = dataset.split(train=False)[:6]
    cache = FeatureCache(tmp_path / "cache")
    cached = ExplainerSession(explainer, session.model, session.preprocess, cache)
    computed = cached.activations(test)  # one forward pass with the maps; the rows made from them are kept
    _no_forward_pass(monkeypatch)
    acts = cached.activations(test)  # served from the cache's folder for exactly these part maps
    np.testing.assert_array_equal(acts.pooled, computed.pooled)
    monkeypatch.undo()
    assert acts.pooled.shape == (len(test), explainer.feature_width_)
    plain = ExplainerSession(explainer, session.model, session.preprocess)
    first = [e.to_dict() for e in cached.explain(test)]
    assert first == [e.to_dict() for e in plain.explain(test)]
    # the explainer round-trips, and the shown score is the one occlusion reads
    loaded = Explainer.load(explainer.save(tmp_path / "exp"))
    again = ExplainerSession(loaded, session.model, session.preprocess, cache).explain(test)
    assert [e.to_dict() for e in again] == first
    one = cached.explain(test[0], heatmaps=True)[0]
    assert one.heatmaps is not None and one.sentence == first[0]["sentence"]  # batch of one: rounding may differ
    cited = [[t for t, _ in e.attributes] for e in cached.explain(test)]
    result = occlusion_test(cached, test, {"method": cited}, [e["class_index"] for e in first])
    assert "cases" in result["method"]


def test_both_adds_the_global_pool_beside_the_part_pool():
    both, maps, pooled, _ = fitted("both")
    features = both.part_pools(maps, pooled)
    p = both.readable_scores(features)
    rows, columns = np.repeat(np.arange(len(p)), 3), np.tile(np.arange(3), len(p))
    model = both.attribute_model_
    np.testing.assert_allclose(model.readable_at(features, None, rows, columns), p[rows, columns])
    assert np.abs(model.evidence_.global_weights[:2]).sum() > 0 and not model.evidence_.global_weights[2].any()


def test_the_command_lines_names_are_the_modules():
    from saywhy.core.part_pooling import POOLINGS
    from saywhy.explain.options import EVIDENCE_POOLINGS

    assert EVIDENCE_POOLINGS == ("auto", *POOLINGS)


def test_fit_takes_the_flags_and_refuses_part_pooling_without_part_maps(tmp_path):
    import argparse

    from saywhy.cli import fit

    parser = argparse.ArgumentParser()
    fit.register(parser.add_subparsers())
    args = parser.parse_args(["fit", "--model", "m", "--root", "r", "--out", str(tmp_path / "x"),
                              "--evidence-pooling", "both", "--visibility-threshold", "0.8"])
    config = fit.config_from(args)
    assert config.evidence_pooling == "both" and config.visibility_threshold == 0.8
    for bad in (["--visibility-threshold", "1"], ["--evidence-pooling", "parts"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["fit", "--model", "m", "--root", "r", "--out", "x", *bad])
    args = parser.parse_args(["fit", "--model", "m", "--root", "r", "--out", str(tmp_path / "x"),
                              "--evidence-pooling", "part", "--no-part-maps"])
    with pytest.raises(SaywhyError, match="needs part maps"):
        fit.run(args)
    assert ExplainerConfig.paper().evidence_pooling == "global"


@pytest.mark.parametrize("contrast", ["margin", "difference"])
def test_contrasts_and_descriptions_take_the_part_pools(contrast):
    maps, counts, cells, visible, _ = synthetic()
    pooled = maps.mean(axis=(2, 3))
    config = ExplainerConfig(min_df=1, evidence_pooling="part", contrast=contrast, visibility_source="pooled")
    explainer = Explainer(config).fit(pooled, counts, TERMS, weights=np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0, 0]]),
                                      class_names=["Bird", "Other"])
    explainer.set_part_maps(PartMaps(l2=1e-3).fit(maps, cells, visible, ["crown", "belly"]), PARTS)
    features = explainer.part_pools(maps, pooled)
    explainer.fit_part_evidence(features, counts)
    assert explainer.contrast(features[:1], "Bird", "Other").sentence
    assert explainer.contrast_scores(features[:1], 0, 1).shape == (len(TERMS),)
    assert explainer.describe("Other").sentence and explainer.class_ranking().shape == (2, len(TERMS))
    assert explainer.filter_shares(features, None, np.zeros((len(features), 1), int)).shape == pooled.shape


def test_fit_and_evaluate_end_to_end_with_part_pooling(tiny_noisy_synthbirds, tmp_path):
    import json

    from saywhy.cli import main

    tiny = tiny_noisy_synthbirds
    root, home = str(tiny["root"] / "CUB_200_2011"), str(tiny["home"])
    assert main(["--quiet", "--home", home, "fit", "--model", str(tiny["ckpt"]), "--root", root, "--min-df", "1",
                 "--out", str(tmp_path / "exp"), "--evidence-pooling", "part"]) == 0
    assert Explainer.load(tmp_path / "exp").pools_parts
    assert main(["--quiet", "--home", home, "evaluate", "--root", root, "--explainer", str(tmp_path / "exp"),
                 "--name", "tiny", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "tiny_eval.json").read_text())
    assert result["image_specificity"]["occlusion"]["method"]["cases"] > 0


def _no_forward_pass(monkeypatch):
    import saywhy.model.feature_cache as feature_cache

    def refuse(*args, **kwargs):
        raise AssertionError("a forward pass where the feature cache holds the rows")

    monkeypatch.setattr(feature_cache, "extract_activations", refuse)


def test_a_part_pooling_fit_runs_each_image_once_and_equals_the_two_pass_fit(tiny_noisy_synthbirds, monkeypatch):
    import saywhy.pipeline as pipeline

    fixture = tiny_noisy_synthbirds
    session, dataset = fixture["session"], fixture["dataset"]
    config = ExplainerConfig(min_df=1, evidence_pooling="both", evidence_smoothing=0.5, visibility_source="pooled")
    run = pipeline.extract_activations
    seen: list[str] = []

    def counted(model, items, *args, **kwargs):
        seen.extend(str(getattr(i, "path", i)) for i in items)
        return run(model, items, *args, **kwargs)

    monkeypatch.setattr(pipeline, "extract_activations", counted)
    one, _ = pipeline.fit_explainer(dataset, session.model, session.preprocess, config,
                                    extractor=fixture["extractor"], progress=False)
    assert one.pools_parts and len(seen) == len(set(seen))  # every fitting image through the network once
    records, _ = pipeline.fitting_records(dataset, "captions")
    assert sorted(seen) == sorted(str(r.path) for r in records)
    seen.clear()
    given = pipeline.pooled_activations(session.model, records, session.preprocess,
                                        pipeline.resolve_layers(session.model, session.preprocess))
    two, _ = pipeline.fit_explainer(dataset, session.model, session.preprocess, config, extractor=fixture["extractor"],
                                    progress=False, activations=given)  # phi given: part maps and pools run again
    assert len(seen) > len(records)
    pooled = given.pooled[:8]
    maps = pipeline.extract_activations(session.model, records[:8], session.preprocess,
                                        pipeline.resolve_layers(session.model, session.preprocess), keep_maps=True,
                                        progress=False).maps
    rows = one.part_pools(maps, pooled)
    np.testing.assert_allclose(rows, two.part_pools(maps, pooled), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(one.scores(rows).p, two.scores(rows).p, rtol=1e-5, atol=1e-8)
    assert [e.sentence for e in one.explain(rows)] == [e.sentence for e in two.explain(rows)]


def test_a_sessions_rows_from_the_maps_run_on_one_blas_thread(tiny_noisy_synthbirds, tmp_path, monkeypatch):
    # an image's part pools are tiny products: with OpenBLAS's second thread they took 6 ms instead of 0.09 ms
    from threadpoolctl import threadpool_info, threadpool_limits

    from saywhy.model.feature_cache import FeatureCache
    from saywhy.pipeline import ExplainerSession, fit_explainer

    fixture = tiny_noisy_synthbirds
    session, dataset = fixture["session"], fixture["dataset"]
    explainer, _ = fit_explainer(dataset, session.model, session.preprocess,
                                 ExplainerConfig(min_df=1, evidence_pooling="both", visibility_source="peak",
                                                 visibility_threshold=0.5),
                                 extractor=fixture["extractor"], progress=False)
    assert explainer.reads_maps
    seen = []
    original = type(explainer).map_activations

    def spy(self, maps, pooled):
        seen.append(max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"))
        return original(self, maps, pooled)

    monkeypatch.setattr(type(explainer), "map_activations", spy)
    test = dataset.split(train=False)[:6]
    monkeypatch.setattr("saywhy.pipeline.MEMO_ITEMS", 4)  # a call over more inputs keeps no maps
    with threadpool_limits(limits=2, user_api="blas"):
        ExplainerSession(explainer, session.model, session.preprocess).explain(test[:2])  # maps kept for ground
        ExplainerSession(explainer, session.model, session.preprocess, FeatureCache(tmp_path / "c")).explain(test[:2])
        ExplainerSession(explainer, session.model, session.preprocess).explain(test)  # no cache, maps not kept
        assert max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas") >= 1
    assert len(seen) >= 3 and set(seen) == {1}


@pytest.mark.parametrize("pooling", ["part", "both"])
def test_located_evidence_cites_a_part_attribute_only_where_its_part_shows_more_than_the_class_mean(pooling):
    """Red fires at the crown in half the images: the class's mean crown pool holds half of it, so "red crown"
    is located (its crown-pool evidence above the mean image's) exactly where red is at the crown."""
    plain, maps, pooled, at_crown = fitted(pooling, top_k=3, located_evidence=False)
    located, _, _, _ = fitted(pooling, top_k=3, located_evidence=True)
    features = plain.part_pools(maps, pooled)
    evidence = plain.attribute_model_.evidence_
    groups = plain.pooling_groups_
    mean = plain.class_mean_pooled_[0]
    f = maps.shape[1]
    excess = {}
    for term in ("red crown", "red belly"):  # sum_k a_tk (psi_g,k(x) - psi_g,k(mean)), written out
        j, g = TERMS.index(term), groups.index(tuple(PARTS[term]))
        excess[term] = (features[:, f * (1 + g):f * (2 + g)] - mean[f * (1 + g):f * (2 + g)]) @ evidence.weights[j]
    np.testing.assert_allclose(plain.attribute_model_.located(features, plain.class_mean_pooled_, [0] * len(features)),
                               np.stack([excess["red crown"] > 0, excess["red belly"] > 0,
                                         np.ones(len(features), bool)], axis=1))
    assert np.mean((excess["red crown"] > 0) == at_crown) > 0.95
    before = [[t for t, _ in e.attributes] for e in plain.explain(features)]
    after = [[t for t, _ in e.attributes] for e in located.explain(features)]
    if pooling == "part":  # the rule has work (with "both" the global weights' own evidence already drops them)
        assert any(excess[t][i] <= 0 for i, cited in enumerate(before) for t in cited if t in excess)
    for i, cited in enumerate(after):
        assert all(excess[t][i] > 0 for t in cited if t in excess)  # only located part-attributes
        assert [t for t in before[i] if t not in excess or excess[t][i] > 0] == cited  # nothing else changes
    np.testing.assert_array_equal(located.cited_mask(features), [[t in cited for t in TERMS] for cited in after])
    # the shown score of what is still cited is unchanged
    shown = {t: s for t, s in plain.explain(features[:1])[0].attributes}
    assert all(np.isclose(shown[t], s) for t, s in located.explain(features[:1])[0].attributes)


def test_located_evidence_changes_nothing_without_part_pools():
    plain, _, pooled, _ = fitted("global", top_k=3, located_evidence=False)
    located, _, _, _ = fitted("global", top_k=3, located_evidence=True)
    assert [e.attributes for e in plain.explain(pooled)] == [e.attributes for e in located.explain(pooled)]
    with pytest.raises(SaywhyError, match="located evidence must be True or False"):
        ExplainerConfig(located_evidence="yes")


def test_located_evidence_read_for_the_first_candidates_equals_it_read_for_every_attribute(monkeypatch):
    """The rule is read for each image's first LOCATED_CANDIDATES x top_k attributes, and for the whole row
    where too few of those pass: the same citations as reading it everywhere."""
    import saywhy.explain.explainer as explainer_module

    located, maps, pooled, at_crown = fitted("part", top_k=2)
    features = located.part_pools(maps, pooled)
    model = located.attribute_model_
    reference = model._class_part_logits(located.class_mean_pooled_).copy()
    reference[:, TERMS.index("red crown")] = 1e9  # "red crown" is never located: its images need a third candidate
    monkeypatch.setattr(model, "_class_part_logits", lambda class_pooled: reference)
    everywhere = [[t for t, _ in e.attributes] for e in located.explain(features)]  # 4 x 2 covers all 3
    assert all("red crown" not in cited for cited in everywhere)
    whole_rows = []
    monkeypatch.setattr(model, "located", lambda *a: whole_rows.append(len(a[0])) or type(model).located(model, *a))
    monkeypatch.setattr(explainer_module, "LOCATED_CANDIDATES", 1)  # the first 2 per image: often too few
    assert [[t for t, _ in e.attributes] for e in located.explain(features)] == everywhere
    assert len(whole_rows) >= at_crown.sum() // 2  # the whole-row reading was needed, and gave the same answer


def test_an_image_equal_to_its_class_mean_is_not_located_in_either_path():
    """The rule asks for more than the class mean: an image that is the mean is no more, whichever product
    computed its part evidence (the whole row's or one pair's)."""
    explainer, _, _, _ = fitted("part", top_k=3)
    model, means = explainer.attribute_model_, explainer.class_mean_pooled_
    features = np.repeat(means[:1], 4, axis=0)
    classes = np.zeros(4, int)
    whole = model.located(features, means, classes)
    rows, columns = np.repeat(np.arange(4), 3), np.tile(np.arange(3), 4)
    np.testing.assert_array_equal(model.located_at(features, means, classes, rows, columns), whole[rows, columns])
    assert not whole[:, :2].any() and whole[:, 2].all()  # the two part-attributes out, "small bird" kept
