"""saywhy evaluate end to end on the shared tiny synthbirds: every table present, beside its baselines,
and the numbers that can be recomputed independently are exactly those.

One ``saywhy evaluate --ablation`` run serves every test. The ablation is cut to two configs
of the p(t|f) model (each row is a refit and another full evaluation, and the evidence model's
fit is the slow part of a refit); the exact PCK of each grounding method on hand-placed maps
is in test_grounding.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from saywhy.apps.grounding import list_grounding_methods
from saywhy.cli import main
from saywhy.explain.explainer import ExplainerConfig
from saywhy.evaluate import ablation_configs, summary_row

CONFIGS = {name: config for name, config in ablation_configs().items() if config.attribute_model != "evidence"}
CONFIGS = dict([list(CONFIGS.items())[0], list(CONFIGS.items())[-1]])  # the paper's method and saywhy's p(t|f) choices


@pytest.fixture(scope="module")
def evaluated(tiny_noisy_synthbirds, tmp_path_factory):
    tiny = tiny_noisy_synthbirds
    out = tmp_path_factory.mktemp("evaluate")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("saywhy.evaluate.ablation_configs", lambda: CONFIGS)
        assert main(["--quiet", "--home", str(tiny["home"]), "evaluate", "--root", str(tiny["root"] / "CUB_200_2011"),
                     "--explainer", str(tiny["exp"]), "--name", "tiny", "--out", str(out), "--ablation"]) == 0
    return json.loads((out / "tiny_eval.json").read_text()), (out / "tiny_eval.md").read_text()


@pytest.fixture(scope="module")
def test_split(tiny_noisy_synthbirds) -> dict:
    """The shared session's own view of the test images, computed without evaluate."""
    session, dataset = tiny_noisy_synthbirds["session"], tiny_noisy_synthbirds["dataset"]
    test = dataset.split(train=False)
    acts = session.activations(test)
    labels = np.array([dataset.class_index(r.class_id) for r in test])
    return {"test": test, "predicted": session.explainer.predict(acts.pooled), "labels": labels}


def test_every_table_has_its_baselines(evaluated, test_split):
    result, _ = evaluated
    test, predicted, labels = test_split["test"], test_split["predicted"], test_split["labels"]
    assert result["test_images"] == len(test) and result["unreadable"] == 0
    assert result["accuracy"] == float((predicted == labels).mean())

    table1 = result["table1_pck"]["results"]
    assert list(table1) == list_grounding_methods()
    assert len({row["scored"] for row in table1.values()}) == 1 > 0 < table1["proposed"]["scored"]  # same pairs
    for row in table1.values():
        values = [row["pck"][a] for a in ("0.1", "0.2", "0.3")]
        assert values == sorted(values) and all(0 <= v <= 1 for v in values)  # PCK grows with alpha

    table2 = result["table2_retrieval"]
    assert {"method", "random"} <= set(table2)
    # The random baseline retrieves as many images per attribute as the method (it only permutes them).
    method, random = table2["method"]["counts"], table2["random"]["counts"]
    assert [tp + fp for tp, fp in zip(method["tp"], method["fp"])] == [tp + fp for tp, fp in zip(random["tp"], random["fp"])]

    table3 = result["table3_bleu"]
    assert set(table3["means"]) == {"correct", "wrong", "overall"}
    captioned = [r.captions is not None for r in test]
    assert table3["counts"] == {"correct": int(((predicted == labels) & captioned).sum()),
                                "wrong": int(((predicted != labels) & captioned).sum()), "overall": sum(captioned)}
    assert {"explanation filters", "random filters", "class's top-weighted filters"} == set(result["faithfulness"]["10"])
    assert result["debugging"]["n_failures"] == int((predicted != labels).sum())
    assert [f["filter"] for f in result["figure5"]] and len(result["figure5"]) == 3
    assert result["figure9"]["n_images"] == sum(captioned)


def test_truth_checks_and_ablation_use_the_synthbirds_ground_truth(evaluated):
    result, markdown = evaluated
    assert 0 <= result["truth"]["precision_at_k"] <= 1
    assert list(result["ablation"]) == list(CONFIGS)
    assert all("precision_at_k" in row for row in result["ablation"].values())
    assert all(set(row) == set(summary_row(result)) for row in result["ablation"].values())
    assert len(result["sample"]) == 10 and all(s["captions"] for s in result["sample"])
    for heading in ("Table 1", "Table 2", "Table 3", "Faithfulness", "Ablation", "never look at the image"):
        assert heading in markdown
    for name in CONFIGS:
        assert f"| {name} |" in markdown


def test_the_full_ablation_lists_the_paper_and_every_choice():
    configs = ablation_configs()
    assert "paper (--method paper)" in configs and configs["paper (--method paper)"] == ExplainerConfig.paper()
    assert all(isinstance(c, ExplainerConfig) for c in configs.values()) and len(set(map(repr, configs.values()))) == len(configs)


def test_text_only_baselines_are_measured_like_the_method(evaluated):
    result, _ = evaluated
    baselines = result["baselines"]
    assert set(baselines) == {"class caption frequency", "fixed sentence", "own captions (upper reference)"}
    assert baselines["fixed sentence"]["distinct_attributes"] <= 5
    assert baselines["fixed sentence"]["most_common_share"] == 1.0  # the same sentence for every image
    assert 0 <= baselines["class caption frequency"]["retrieval_map"] <= 1
    own, fixed = baselines["own captions (upper reference)"]["bleu"], baselines["fixed sentence"]["bleu"]
    assert own["BLEU-1"] >= fixed["BLEU-1"]  # it is built from the references it is scored against


def test_keypoint_checks_stand_beside_their_baselines(evaluated):
    result, markdown = evaluated
    spec = result["image_specificity"]
    citers = {"method", "class caption frequency", "own captions (upper reference)"}
    assert set(spec["invisible_parts"]) == citers and set(spec["occlusion"]) == citers
    assert spec["occlusion_images"] == min(150, spec["images"])
    for row in spec["occlusion"].values():
        assert row["cases"] > 0 and 0 <= row["own_part_drops_more"] <= 1
    discrimination = result["table1_pck"]["part_discrimination"]
    assert set(discrimination) == set(result["table1_pck"]["results"])
    assert discrimination["proposed"]["pairs"] > 0
    for same_point in ("constant", "cam", "gradcam", "bbox_center"):  # one point for every attribute: never apart
        assert discrimination[same_point]["rate"] == 0.0
    at_tnr = result["table2_at_paper_tnr"]
    assert {"method", "class caption frequency", "random"} <= set(at_tnr) and at_tnr["target_tnr"] == 0.929
    assert all(0 <= at_tnr[n]["recall"] <= 1 for n in ("method", "class caption frequency", "random"))
    for heading in ("Image-specificity against keypoints", "paper's operating point", "part discrimination"):
        assert heading in markdown


def test_grounding_ablation_runs_finer_maps_beside_the_constant_pdf(tiny_noisy_synthbirds):
    from saywhy.evaluate import grounding_ablation

    tiny = tiny_noisy_synthbirds
    rows = grounding_ablation(tiny["session"], tiny["dataset"], tiny["extractor"], scales=(2.0,))
    (name, row), = rows.items()
    assert row["input_size"] == 64 and "64 px" in name
    for key in ("pck", "constant_pck", "contrast_pck"):
        values = [row[key][a] for a in ("0.1", "0.2", "0.3")]
        assert values == sorted(values) and all(0 <= v <= 1 for v in values)


def test_the_ablation_rows_that_read_part_maps_run_end_to_end(tiny_noisy_synthbirds):
    """The gated row fits the part maps and the part-pooled row (which fits its own) gets the shared ones:
    both give finite figures on the same images."""
    from saywhy.evaluate import ablation

    tiny = tiny_noisy_synthbirds
    configs = {name: config for name, config in ablation_configs().items()
               if config.part_visibility or config.evidence_pooling == "part" or name.startswith("saywhy default")}
    assert len(configs) == 3  # the gate, part pooling, and the default ("auto": both, with the peaks' threshold)
    rows = ablation(tiny["session"], tiny["dataset"], tiny["extractor"], configs)
    assert set(rows) == set(configs)
    for row in rows.values():
        assert np.isfinite(row["retrieval_map"]) and all(np.isfinite(v) for v in row["pck"].values())
        assert row["distinct_attributes"] > 0


def test_the_ablation_runs_for_an_explainer_that_reads_the_maps(tiny_noisy_synthbirds, tmp_path):
    """The session's explainer reads part pools and peaks (its activations are wider than phi(x)): the
    ablation's refits take phi(x), the first columns, instead of failing on the width."""
    from saywhy.evaluate import ablation
    from saywhy.model.feature_cache import FeatureCache
    from saywhy.pipeline import ExplainerSession, fit_explainer

    tiny = tiny_noisy_synthbirds
    session = tiny["session"]
    config = ExplainerConfig(min_df=1, evidence_pooling="part", visibility_source="peak", visibility_threshold=0.5)
    explainer, _ = fit_explainer(tiny["dataset"], session.model, session.preprocess, config,
                                 extractor=tiny["extractor"], progress=False)
    assert explainer.reads_maps and explainer.activation_width_ > explainer.n_filters_
    reading = ExplainerSession(explainer, session.model, session.preprocess, FeatureCache(tmp_path / "cache"))
    rows = ablation(reading, tiny["dataset"], tiny["extractor"], {"default": ExplainerConfig(min_df=1)})
    assert np.isfinite(rows["default"]["retrieval_map"])
