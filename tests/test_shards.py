"""Fitting in shards (issue 13, item 4): N shards merged give the single run's explainer."""
import numpy as np
import pytest
from safetensors.numpy import load_file

from saywhy.data.images import Preprocess
from saywhy.errors import SaywhyError
from saywhy.explain.explainer import ExplainerConfig
from saywhy.pipeline import fit_explainer
from saywhy.shards import extract_part, fit_from_shards, parse_shard, write_shard


@pytest.fixture(scope="module")
def single_and_sharded(tiny_noisy_synthbirds, tmp_path_factory):
    birds = tiny_noisy_synthbirds
    model, dataset = birds["session"].model, birds["dataset"]
    # global pooling: part pooling is learned in one process only (a sharded fit pools globally)
    preprocess, config = Preprocess(image_size=32), ExplainerConfig(min_df=1, evidence_l2=0.1, evidence_pooling="global")
    single, _ = fit_explainer(dataset, model, preprocess, config, extractor=birds["extractor"], progress=False)
    base = tmp_path_factory.mktemp("shards")
    folders = [write_shard(extract_part(dataset, model, preprocess, k, 3, extractor=birds["extractor"], progress=False),
                           base / f"part-{k}") for k in (2, 0, 1)]  # given in any order
    merged, report = fit_from_shards(folders, model, config, rows=7)  # chunks that cross no shard, of any size
    return single, merged, report, folders, model


def test_sharded_statistics_equal_the_single_run_exactly(single_and_sharded):
    single, merged, report, _, _ = single_and_sharded
    assert merged.vocabulary_ == single.vocabulary_ and merged.n_images_ == single.n_images_ == report.images_used
    one, many = single.cooccurrence_, merged.cooccurrence_
    for name in ("likelihood_sum", "attribute_images"):
        np.testing.assert_array_equal(getattr(many.statistics_, name), getattr(one.statistics_, name))
    for name in ("prior_", "pdf_", "filter_threshold_", "filter_max_"):
        np.testing.assert_array_equal(getattr(many, name), getattr(one, name))
    assert merged.surface_forms_ == single.surface_forms_
    assert merged.metadata_["fit_accuracy"] == single.metadata_["fit_accuracy"]


def test_sharded_evidence_model_equals_the_single_run_to_rounding(single_and_sharded):
    # The loss is summed in other chunks, so its float32 rounding differs by ~1e-7 and L-BFGS
    # (tolerance 1e-3 per attribute, core.attribute_evidence.TOLERANCE) stops elsewhere along directions the data leave flat (72 images, 300+
    # attributes): the fitted probabilities agree, not every weight.
    single, merged, _, folders, _ = single_and_sharded
    np.testing.assert_allclose(merged.class_mean_pooled_, single.class_mean_pooled_, rtol=1e-9)
    pooled = np.concatenate([load_file(f / "features.safetensors")["pooled"] for f in sorted(folders)])
    a, b = merged.attribute_model_.evidence_, single.attribute_model_.evidence_
    np.testing.assert_allclose(a.probability(pooled), b.probability(pooled), atol=0.05)


def test_missing_or_repeated_shards_are_refused(single_and_sharded):
    _, _, _, folders, model = single_and_sharded
    with pytest.raises(SaywhyError, match="missing 1/3"):
        fit_from_shards([folders[0], folders[1]], model)
    with pytest.raises(SaywhyError, match="given twice"):
        fit_from_shards([folders[0], *folders], model)
    with pytest.raises(SaywhyError, match="K/N"):
        parse_shard("3/3")


def test_extract_shards_then_fit_from_them_on_the_command_line(tiny_noisy_synthbirds, tmp_path):
    from saywhy.cli import main
    from saywhy.explain.explainer import Explainer

    birds = tiny_noisy_synthbirds
    common = ["--quiet", "--home", str(birds["home"])]
    data = ["--model", str(birds["ckpt"]), "--root", str(birds["root"])]
    for k in range(2):
        assert main([*common, "extract", *data, "--shard", f"{k}/2", "--out", str(tmp_path / f"s{k}")]) == 0
    assert main([*common, "fit", "--model", str(birds["ckpt"]), "--from-shards", str(tmp_path / "s0"),
                 str(tmp_path / "s1"), "--out", str(tmp_path / "merged"), "--min-df", "1"]) == 0
    assert main([*common, "fit", *data, "--out", str(tmp_path / "single"), "--min-df", "1"]) == 0
    merged, single = Explainer.load(tmp_path / "merged"), Explainer.load(tmp_path / "single")
    assert merged.vocabulary_ == single.vocabulary_
    np.testing.assert_array_equal(merged.filter_attribute_pdf_, single.filter_attribute_pdf_)
    assert main([*common, "extract", *data, "--shard", "2/2", "--out", str(tmp_path / "bad")]) == 2  # a usage error


@pytest.mark.parametrize("n", [1, 2, 9, 1000])
def test_top_fraction_thresholds_from_chunks_are_np_quantile(n):
    from saywhy.core.filter_attribute import TopValues

    pooled = np.random.default_rng(n).gamma(1.0, size=(n, 5)).astype(np.float32)
    pooled[:, 0] = 0.0  # a filter at its floor everywhere: its threshold is just above the floor
    expected = np.quantile(pooled.astype(np.float64), 0.9, axis=0)
    lowest = pooled.min(axis=0).astype(np.float64)
    expected[expected <= lowest] = np.nextafter(lowest[expected <= lowest], np.inf)  # never the floor itself
    left, right = TopValues(n, 5, 0.1, spare=3), TopValues(n, 5, 0.1, spare=3)
    for start in range(0, n, 7):
        (left if start % 2 else right).add(pooled[start:start + 7])
    left.merge(right)
    np.testing.assert_array_equal(left.thresholds(), expected)
