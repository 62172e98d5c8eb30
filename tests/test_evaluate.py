"""saywhy evaluate end to end on a tiny synthbirds: every table present, numbers in range."""
from __future__ import annotations

import json

import pytest

from saywhy.cli import main
from saywhy.data.synthbirds import SynthConfig, generate


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluate")
    root = generate(base / "birds", SynthConfig(n_images=96, image_size=64, n_species=4), workers=1, progress=False)
    home = ["--quiet", "--home", str(base / "home")]
    assert main(home + ["train", "--root", str(root), "--out", str(base / "ckpt"), "--epochs", "1",
                        "--image-size", "32"]) == 0
    assert main(home + ["fit", "--model", str(base / "ckpt"), "--root", str(root), "--out", str(base / "exp"),
                        "--min-df", "1"]) == 0
    assert main(home + ["evaluate", "--root", str(root / "CUB_200_2011"), "--explainer", str(base / "exp"),
                        "--name", "tiny", "--out", str(base / "results"), "--ablation"]) == 0
    return json.loads((base / "results" / "tiny_eval.json").read_text()), (base / "results" / "tiny_eval.md").read_text()


def test_every_table_has_its_baselines(evaluated):
    result, _ = evaluated
    assert set(result["table1_pck"]["results"]) == {"proposed", "constant", "cam", "gradcam", "bbox_center", "random"}
    for row in result["table1_pck"]["results"].values():
        values = [row["pck"][a] for a in ("0.1", "0.2", "0.3")]
        assert values == sorted(values) and all(0 <= v <= 1 for v in values)  # PCK grows with alpha
    assert {"method", "random"} <= set(result["table2_retrieval"])
    assert set(result["table3_bleu"]["means"]) == {"correct", "wrong", "overall"}
    assert {"explanation filters", "random filters", "class's top-weighted filters"} == set(result["faithfulness"]["10"])


def test_truth_checks_and_ablation_use_the_synthbirds_ground_truth(evaluated):
    result, markdown = evaluated
    assert 0 <= result["truth"]["precision_at_k"] <= 1
    from saywhy.evaluate import ablation_configs

    assert list(result["ablation"]) == list(ablation_configs()) and "paper (--method paper)" in result["ablation"]
    assert all("precision_at_k" in row for row in result["ablation"].values())
    assert len(result["sample"]) == 10 and all(s["captions"] for s in result["sample"])
    for heading in ("Table 1", "Table 2", "Table 3", "Faithfulness", "Ablation", "never look at the image"):
        assert heading in markdown


def test_text_only_baselines_are_measured_like_the_method(evaluated):
    result, _ = evaluated
    baselines = result["baselines"]
    assert set(baselines) == {"class caption frequency", "fixed sentence", "own captions (upper reference)"}
    assert baselines["fixed sentence"]["distinct_attributes"] <= 5
    assert baselines["fixed sentence"]["most_common_share"] == 1.0  # the same sentence for every image
    assert 0 <= baselines["class caption frequency"]["retrieval_map"] <= 1
    own, fixed = baselines["own captions (upper reference)"]["bleu"], baselines["fixed sentence"]["bleu"]
    assert own["BLEU-1"] >= fixed["BLEU-1"]  # it is built from the references it is scored against
