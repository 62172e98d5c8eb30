"""The default evidence pooling, "auto": part pooling ("both") where a fit learns part maps, global elsewhere.

A fitted explainer's config never says "auto": it says what the fit did, so that a saved explainer
reads the same whatever later defaults become.
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import scipy.sparse as sp

from saywhy.errors import SaywhyError
from saywhy.explain.explainer import AUTO_POOLING, Explainer, ExplainerConfig


def test_auto_becomes_both_with_part_maps_and_global_without():
    config = ExplainerConfig()
    assert config.evidence_pooling == "auto" and not config.pools_evidence  # nothing pooled until a fit says so
    assert config.for_fit(part_maps=True).evidence_pooling == AUTO_POOLING == "both"
    assert config.for_fit(part_maps=True).pools_evidence
    assert config.for_fit(part_maps=False).evidence_pooling == "global"
    assert ExplainerConfig(attribute_model="cooccurrence").for_fit(part_maps=True).evidence_pooling == "global"
    for given in ("global", "part", "both"):  # what is asked for is kept
        assert ExplainerConfig(evidence_pooling=given).for_fit(part_maps=False).evidence_pooling == given
    with pytest.raises(SaywhyError, match="evidence pooling"):
        ExplainerConfig(evidence_pooling="automatic")


def test_an_explainer_fitted_on_arrays_says_global():
    pooled = np.array([[5.0, 0.1], [0.1, 5.0]])
    explainer = Explainer(ExplainerConfig(min_df=1)).fit(pooled, sp.csr_matrix(np.eye(2)), ["red crown", "blue wing"],
                                                         weights=np.eye(2), class_names=["A", "B"])
    assert explainer.config.evidence_pooling == "global" and not explainer.pools_parts


def test_a_fit_on_images_with_keypoints_pools_under_the_part_maps_it_learns(tiny_noisy_synthbirds, tmp_path):
    from saywhy.pipeline import ExplainerSession, fit_explainer

    tiny = tiny_noisy_synthbirds
    session, dataset = tiny["session"], tiny["dataset"]
    explainer, report = fit_explainer(dataset, session.model, session.preprocess, ExplainerConfig(min_df=1),
                                      extractor=tiny["extractor"], progress=False)
    assert explainer.config.evidence_pooling == "both" and explainer.pools_parts and explainer.reads_peaks
    assert not report.warnings or not any("pooled globally" in w for w in report.warnings)
    loaded = Explainer.load(explainer.save(tmp_path / "exp"))
    assert loaded.config.evidence_pooling == "both"  # saved as fitted, never "auto"
    test = dataset.split(train=False)[:4]
    explanations = ExplainerSession(loaded, session.model, session.preprocess).explain(test)
    assert all(e.sentence for e in explanations)


def test_the_command_line_pools_globally_where_it_learns_no_part_maps(tiny_noisy_synthbirds, tmp_path):
    from saywhy.cli import fit, main

    tiny = tiny_noisy_synthbirds
    root, home = str(tiny["root"] / "CUB_200_2011"), str(tiny["home"])
    common = ["--quiet", "--home", home, "fit", "--model", str(tiny["ckpt"]), "--root", root, "--min-df", "1"]
    assert main([*common, "--out", str(tmp_path / "plain"), "--no-part-maps"]) == 0  # the defaults need no flag
    plain = Explainer.load(tmp_path / "plain")
    assert plain.config.evidence_pooling == "global" and not plain.has_part_maps and not plain.reads_maps
    assert main([*common, "--out", str(tmp_path / "pooled")]) == 0
    assert Explainer.load(tmp_path / "pooled").config.evidence_pooling == "both"
    parser = argparse.ArgumentParser()
    fit.register(parser.add_subparsers())
    asked = parser.parse_args(["fit", "--model", "m", "--from-shards", "s", "--out", str(tmp_path / "x"),
                               "--evidence-pooling", "both"])
    with pytest.raises(SaywhyError, match="needs part maps learned in one process"):
        fit.run(asked)  # asked for explicitly: refused, never silently global
