"""The fitted explainer on hand-built arrays: known answers, persistence, bad input."""
import numpy as np
import pytest
import scipy.sparse as sp

from saywhy.errors import SaywhyError
from saywhy.explain.explainer import Explainer, ExplainerConfig

VOCAB = ["red crown", "blue crown", "white eyebrow", "small bird"]
CLASSES = ["001.Red_capped_Wren", "002.Blue_capped_Wren"]


def _data(seed: int = 0):
    """40 images, 4 filters: filter 0 fires on red crowns, 1 on blue crowns, 2 on eyebrows, 3 always."""
    rng = np.random.default_rng(seed)
    red = np.arange(40) < 20
    eyebrow = rng.random(40) < 0.5
    pooled = np.stack([
        np.where(red, 5.0, 0.2), np.where(~red, 5.0, 0.2), np.where(eyebrow, 4.0, 0.2), np.full(40, 2.0),
    ], axis=1) + rng.random((40, 4)) * 0.1
    counts = np.stack([red * 2, ~red * 2, eyebrow * 1, np.ones(40)], axis=1).astype(int)
    counts[::3, 3] = 0  # "small bird" in most but not all caption files
    weights = np.array([[3.0, -2.0, 0.5, 0.1], [-2.0, 3.0, 0.5, 0.1]])
    return pooled, sp.csr_matrix(counts), weights


def _fitted(config=ExplainerConfig(top_k=2, min_df=1)):
    pooled, counts, weights = _data()
    return Explainer(config).fit(pooled, counts, VOCAB, weights, CLASSES), pooled


def test_fit_returns_self_with_learned_state():
    explainer, _ = _fitted()
    assert explainer.filter_attribute_pdf_.shape == (4, 4)
    np.testing.assert_allclose(explainer.filter_attribute_pdf_.sum(axis=1), 1.0)
    assert VOCAB[int(explainer.filter_attribute_pdf_[0].argmax())] == "red crown"
    assert VOCAB[int(explainer.filter_attribute_pdf_[1].argmax())] == "blue crown"


def test_red_crown_image_explained_by_red_crown():
    explainer, pooled = _fitted()
    (explanation,) = explainer.explain(pooled[:1])
    assert explanation.class_name == "Red-capped Wren"
    assert explanation.attributes[0][0] == "red crown"
    assert explanation.sentence.startswith("This is a Red-capped Wren because it has red")


def test_contrast_names_the_differing_crowns():
    explainer, pooled = _fitted()
    contrast = explainer.contrast(pooled[0], "Red-capped Wren", "002.Blue_capped_Wren")
    assert contrast.favour[0][0] == "red crown"
    assert contrast.against[0][0] == "blue crown"
    assert contrast.sentence.startswith("This is a Red-capped Wren and not a Blue-capped Wren because it has red crown")


def test_class_description_uses_eq_7_8():
    explainer, _ = _fitted(ExplainerConfig.paper(top_k=2, min_df=1))
    assert explainer.describe(1).attributes[0][0] == "blue crown"
    np.testing.assert_allclose(np.exp(explainer.class_ranking()).sum(axis=1), 1.0)  # eq. 7: a p.d.f. per class


def test_class_description_with_the_evidence_model():
    explainer, _ = _fitted()
    assert explainer.describe(1).attributes[0][0] == "blue crown"
    assert explainer.describe(0).attributes[0][0] == "red crown"
    scores = [p for _, p in explainer.describe(0).attributes]
    assert all(0 < p < 1 for p in scores)  # calibrated p(t|x) at the class's mean activations


def test_save_load_round_trip_gives_identical_explanations(tmp_path):
    explainer, pooled = _fitted()
    explainer.save(tmp_path / "exp")
    loaded = Explainer.load(tmp_path / "exp")
    assert loaded.config == explainer.config
    assert [e.to_dict() for e in loaded.explain(pooled)] == [e.to_dict() for e in explainer.explain(pooled)]
    assert not [p for p in tmp_path.glob(".exp.*") if p.is_dir()], "no temp folder left behind"


def test_unfitted_explainer_says_so():
    with pytest.raises(SaywhyError, match="not fitted"):
        Explainer().explain(np.ones((1, 4)))


def test_class_count_mismatch_is_refused():
    pooled, counts, weights = _data()
    with pytest.raises(SaywhyError, match="predicts 2 classes but the dataset has 3"):
        Explainer().fit(pooled, counts, VOCAB, weights, CLASSES + ["003.Extra"])


def test_unknown_class_suggests_similar():
    explainer, _ = _fitted()
    with pytest.raises(SaywhyError, match="Red-capped Wren"):
        explainer.class_index("Red capped Wrn")


def test_loading_a_non_explainer_folder_is_one_clear_error(tmp_path):
    with pytest.raises(SaywhyError, match="not a fitted explainer"):
        Explainer.load(tmp_path)


# Each attribute model's own settings, tested on the output that model computes from them:
# the paper's p(t|f) (fitted with either model, Figure 5 shows it) and the evidence model's.
# filter_scale only matters for a sigma over filters, top_fraction only for sigma "top"
@pytest.mark.parametrize("field, value, sigma", [("sigma_activation", "softmax", "l1"), ("likelihood", "mean", "l1"),
                                                 ("filter_scale", "max", "l1"), ("prior", "uniform", "l1"),
                                                 ("top_fraction", 0.5, "top")])
def test_every_cooccurrence_setting_changes_p_t_f_and_keeps_the_red_crown(field, value, sigma):
    config = ExplainerConfig.paper(top_k=2, min_df=1, sigma_activation=sigma)
    base, pooled = _fitted(config)
    changed, _ = _fitted(ExplainerConfig(**{**config.__dict__, field: value}))
    assert not np.allclose(changed.filter_attribute_pdf_, base.filter_attribute_pdf_)
    assert VOCAB[int(changed.filter_attribute_pdf_[0].argmax())] == "red crown"
    assert changed.explain(pooled[:1])[0].attributes[0][0] == "red crown"


@pytest.mark.parametrize("field, value", [("evidence_l2", 1.0), ("class_weighting", False), ("grounding", "positive")])
def test_every_evidence_setting_changes_the_evidence_models_output(field, value):
    base, pooled = _fitted()
    changed, _ = _fitted(ExplainerConfig(top_k=2, min_df=1, **{field: value}))
    outputs = lambda e: (e.attribute_log_pdf(pooled[:5]), e.grounding_alphas())  # noqa: E731
    assert any(not np.allclose(x, y) for x, y in zip(outputs(changed), outputs(base)))
    assert changed.explain(pooled[:1])[0].attributes[0][0] == "red crown"


def test_sigma_decision_changes_eq_6_for_both_models():
    for config in (ExplainerConfig(top_k=2, min_df=1), ExplainerConfig.paper(top_k=2, min_df=1)):
        base, pooled = _fitted(config)
        changed, _ = _fitted(ExplainerConfig(**{**config.__dict__, "sigma_decision": "softmax"}))
        assert not np.allclose(changed.attribute_log_pdf(pooled[:3]), base.attribute_log_pdf(pooled[:3]))


def test_every_registered_attribute_model_finds_the_red_crown():
    from saywhy.explain.attribute_models import ATTRIBUTE_MODELS

    for name in ATTRIBUTE_MODELS:
        explainer, pooled = _fitted(ExplainerConfig(top_k=2, min_df=1, attribute_model=name))
        assert explainer.explain(pooled[:1])[0].attributes[0][0] == "red crown"
        assert explainer.explain(pooled[25:26])[0].attributes[0][0] == "blue crown"


@pytest.mark.parametrize("changes, message", [
    ({"contrast": "bogus"}, "unknown contrast 'bogus'"), ({"top_k": 0}, "top k must be a whole number"),
    ({"min_df": 1.5}, "min df must be a whole number"), ({"top_fraction": 0.0}, "top fraction"),
    ({"top_fraction": float("nan")}, "top fraction"), ({"evidence_l2": float("nan")}, "evidence L2"),
    ({"evidence_l2": -1.0}, "evidence L2"), ({"sigma_decision": "top"}, "unknown sigma decision"),
    ({"prior": "idf"}, "unknown prior"), ({"likelihood": "max"}, "unknown likelihood"),
    ({"class_weighting": "yes"}, "class weighting")])
def test_every_setting_is_validated_when_the_config_is_made(changes, message):
    with pytest.raises(SaywhyError, match=message):
        ExplainerConfig(**changes)


def test_settings_another_model_reads_are_named():
    assert ExplainerConfig(attribute_model="cooccurrence").without_effect(["evidence_l2", "grounding", "prior"]) == \
        ["evidence_l2", "grounding"]
    assert ExplainerConfig().without_effect(["evidence_l2", "prior", "top_k"]) == []


def test_an_all_zero_image_gets_no_attributes():
    for config in (ExplainerConfig(top_k=2, min_df=1), ExplainerConfig.paper(top_k=2, min_df=1)):
        explainer, _ = _fitted(config)
        explanation = explainer.explain(np.zeros((1, 4)))[0]
        assert explanation.attributes == []
        assert "no known attribute supports it" in explanation.sentence


def test_non_finite_activations_are_refused():
    explainer, pooled = _fitted()
    bad = pooled[:2].copy()
    bad[1, 2] = np.nan
    with pytest.raises(SaywhyError, match="NaN or infinite"):
        explainer.explain(bad)
    with pytest.raises(SaywhyError, match="NaN or infinite"):
        Explainer(ExplainerConfig(min_df=1)).fit(bad, sp.csr_matrix(np.ones((2, 4))), VOCAB, np.ones((2, 4)), CLASSES)


def test_a_class_is_not_contrasted_with_itself():
    explainer, pooled = _fitted()
    with pytest.raises(SaywhyError, match="cannot contrast Red-capped Wren with itself"):
        explainer.contrast(pooled[0], 0, "Red-capped Wren")


def test_contrast_refuses_a_batch_instead_of_keeping_its_first_image():
    explainer, pooled = _fitted()
    with pytest.raises(SaywhyError, match="one image at a time, got 3"):
        explainer.contrast(pooled[:3], 0, 1)


def test_describe_ranks_by_log_odds_where_probabilities_round_to_one():
    from saywhy.core.attribute_evidence import AttributeEvidence

    explainer, _ = _fitted(ExplainerConfig(top_k=2, min_df=1, class_weighting=False))
    # class means give logits of about 50 and 80 for the two crowns: both p = 1.0 in float64
    weights = np.zeros((4, 4))
    weights[:2, 3] = [25.0, 40.0]
    explainer.attribute_model_.evidence_ = AttributeEvidence(weights, np.array([0.0, 0.0, -5.0, -5.0]))
    assert [t for t, _ in explainer.describe(0).attributes] == ["blue crown", "red crown"]


def test_targets_may_be_given_one_per_image():
    explainer, pooled = _fitted()
    both = explainer.explain(pooled[:2], [0, 1])
    assert [e.class_index for e in both] == [0, 1]
    assert [e.predicted for e in both] == [True, False]  # both images are red-crowned
    assert 0.5 < both[0].probability <= 1 and both[1].probability < 0.5
    assert both[1].alternatives[0][0] == "Red-capped Wren"
    with pytest.raises(SaywhyError, match="3 target classes for 2 images"):
        explainer.explain(pooled[:2], [0, 1, 1])
    with pytest.raises(SaywhyError, match="out of range"):
        explainer.explain(pooled[:2], [0, 2])


def test_a_damaged_or_edited_explainer_is_refused_on_load(tmp_path):
    import json

    explainer, _ = _fitted()
    folder = explainer.save(tmp_path / "exp")
    arrays = folder / "explainer.safetensors"
    data = bytearray(arrays.read_bytes())
    data[-3] ^= 0xFF
    arrays.write_bytes(bytes(data))
    with pytest.raises(SaywhyError, match="does not match the digest"):
        Explainer.load(folder)
    folder = explainer.save(tmp_path / "exp2")
    meta = json.loads((folder / "explainer.json").read_text())
    meta["vocabulary"] = meta["vocabulary"][:-1]
    (folder / "explainer.json").write_text(json.dumps(meta))
    with pytest.raises(SaywhyError, match="edited after saving"):
        Explainer.load(folder)
    del meta["content_sha256"]  # removing the digest does not get an edit past it: format 5 always has one
    (folder / "explainer.json").write_text(json.dumps(meta))
    with pytest.raises(SaywhyError, match="edited after saving"):
        Explainer.load(folder)
    meta["format_version"] = 4  # as files written before the content digest: the shapes still catch it
    (folder / "explainer.json").write_text(json.dumps(meta))
    with pytest.raises(SaywhyError, match="shape"):
        Explainer.load(folder)
    (folder / "explainer.json").write_text("{not json")
    with pytest.raises(SaywhyError, match="damaged"):
        Explainer.load(folder)


# With the evidence model, "difference" reads the image's own evidence through the other class's
# filters; it does not say what the other class would have, so it is tested with p(t|f) only.
@pytest.mark.parametrize("contrast, model", [("margin", "evidence"), ("margin", "cooccurrence"),
                                             ("difference", "cooccurrence")])
def test_both_contrast_modes_name_the_differing_crowns(contrast, model):
    explainer, pooled = _fitted(ExplainerConfig(top_k=2, min_df=1, contrast=contrast, attribute_model=model))
    result = explainer.contrast(pooled[25], 1, 0)  # a blue-crowned image: why blue-capped, not red-capped
    assert result.favour[0][0] == "blue crown"
    assert result.against[0][0] == "red crown"


def test_margin_contrast_is_antisymmetric():
    explainer, pooled = _fitted()
    np.testing.assert_allclose(explainer.contrast_scores(pooled[3], 0, 1), -explainer.contrast_scores(pooled[3], 1, 0))


def test_paper_config_is_the_papers_method():
    paper = ExplainerConfig.paper()
    assert (paper.sigma_activation, paper.sigma_decision, paper.prior, paper.likelihood, paper.contrast, paper.top_k) == \
        ("l1", "l1", "tfidf", "sum", "difference", 5)
    assert (paper.attribute_model, paper.sentence) == ("cooccurrence", "paper")


def test_paper_mode_explains_with_eq_5_exactly():
    explainer, pooled = _fitted(ExplainerConfig.paper(top_k=2, min_df=1))
    assert explainer.attribute_model_ is explainer.cooccurrence_
    contributions = np.maximum(pooled[:3] * explainer.head_weights_[explainer.predict(pooled[:3])], 0)
    expected = (contributions / contributions.sum(axis=1, keepdims=True)) @ explainer.filter_attribute_pdf_
    np.testing.assert_allclose(explainer.attribute_pdf(pooled[:3]), expected)


def test_unknown_setting_is_one_clear_error():
    with pytest.raises(SaywhyError, match="unknown attribute model 'bayes': choose one of evidence, cooccurrence"):
        ExplainerConfig(attribute_model="bayes")


def test_evidence_model_reads_each_filter_through_eq_6():
    """p(t|x,c) = sigmoid(b + F sum_k a_k phi_k p(f_k|x,c)); uniform p(f|x,c) gives back p(t|x)."""
    explainer, pooled = _fitted()
    evidence = explainer.attribute_model_.evidence_
    x = pooled[:2]
    contributions = np.maximum(x * explainer.head_weights_[[0, 0]], 0)
    p_filter = contributions / contributions.sum(axis=1, keepdims=True)
    logits = (x * 4 * p_filter) @ evidence.weights.T + evidence.bias
    np.testing.assert_allclose(explainer.attribute_pdf(x, np.array([0, 0])), 1 / (1 + np.exp(-logits)))
    np.testing.assert_allclose(evidence.probability(x, np.full((2, 4), 0.25)), evidence.probability(x))


def test_grounding_alphas_are_the_evidence_weights():
    explainer, _ = _fitted()
    np.testing.assert_array_equal(explainer.grounding_alphas(), explainer.attribute_model_.evidence_.weights.T)
    positive, _ = _fitted(ExplainerConfig(top_k=2, min_df=1, grounding="positive"))
    np.testing.assert_array_equal(positive.grounding_alphas(), np.maximum(positive.attribute_model_.evidence_.weights.T, 0))
    assert int(explainer.grounding_alphas()[:, 0].argmax()) == 0  # red crown: the red-crown filter
    part, _ = _fitted(ExplainerConfig(top_k=2, min_df=1, grounding="part"))  # "red crown" and "blue crown" share one map
    alphas, evidence = part.grounding_alphas(), part.attribute_model_.evidence_.weights.T
    images = part.cooccurrence_.statistics_.attribute_images
    crown = (evidence[:, 0] * images[0] + evidence[:, 1] * images[1]) / (images[0] + images[1])
    np.testing.assert_allclose(alphas[:, 0], crown, atol=1e-9)
    np.testing.assert_allclose(alphas[:, 1], crown, atol=1e-9)
    np.testing.assert_allclose(alphas[:, 2], evidence[:, 2])  # the only eyebrow attribute keeps its own


def test_natural_sentence_uses_learned_forms():
    from saywhy.text.surface import learn_surface_forms

    pooled, counts, weights = _data()
    captions = ["this small bird has a red crown and a white eyebrow", "a bird with a blue crown", "small bird"]
    # "small bird" has no filter of its own here: a weak penalty lets it into the sentence, whose form is the point.
    explainer = Explainer(ExplainerConfig(top_k=4, min_df=1, evidence_l2=1e-3 / len(VOCAB))).fit(
        pooled, counts, VOCAB, weights, CLASSES, surface_forms=learn_surface_forms(captions, VOCAB))
    sentence = explainer.explain(pooled[:1])[0].sentence
    assert sentence.startswith("This is a Red-capped Wren, a small bird, because it has a red")
    assert "small bird" not in sentence.split("because")[1]


def test_top_sigma_counts_each_filters_most_activating_images():
    explainer, pooled = _fitted(ExplainerConfig(top_k=2, min_df=1, sigma_activation="top", top_fraction=0.25))
    # filter 0 (red crowns) counts its 10 most activating images: all red-crowned, so
    # "blue crown" gets no probability from it at all
    assert explainer.cooccurrence_.statistics_.likelihood_sum[VOCAB.index("blue crown"), 0] == 0
    assert explainer.cooccurrence_.statistics_.likelihood_sum[VOCAB.index("red crown"), 0] == 10


def test_strong_evidence_is_ranked_by_log_odds_not_by_rounded_probabilities():
    from saywhy.core.attribute_evidence import AttributeEvidence

    explainer, _ = _fitted(ExplainerConfig(top_k=2, min_df=1, class_weighting=False))
    # logits 50 and 80 both round to p = 1.0; vocabulary order alone would put "red crown" first
    weights = np.zeros((4, 4))
    weights[:2, 3] = [25.0, 40.0]
    explainer.attribute_model_.evidence_ = AttributeEvidence(weights, np.array([0.0, 0.0, -5.0, -5.0]))
    image = np.array([[0.0, 0.0, 0.0, 2.0]])
    explanation = explainer.explain(image)[0]
    assert [t for t, _ in explanation.attributes] == ["blue crown", "red crown"]
    np.testing.assert_allclose(explainer.attribute_log_pdf(image)[0, :2], [-np.exp(-50.0), -np.exp(-80.0)])


def test_evidence_explanations_carry_the_evidence_they_are_ranked_by():
    explainer, pooled = _fitted()
    explanation = explainer.explain(pooled[:1])[0]
    assert explanation.evidence is not None and explanation.evidence == sorted(explanation.evidence, reverse=True)
    # the scores shown are the calibrated p(t|x) of the image alone, not the ranking's sigmoid(evidence)
    calibrated = explainer.attribute_model_.evidence_.probability(pooled[:1])[0]
    np.testing.assert_allclose([p for _, p in explanation.attributes],
                               [calibrated[VOCAB.index(t)] for t, _ in explanation.attributes])
    assert all(0 < p < 0.9999 for _, p in explanation.attributes)
    paper, _ = _fitted(ExplainerConfig.paper(top_k=2, min_df=1))
    assert paper.explain(pooled[:1])[0].evidence is None


@pytest.mark.parametrize("contrast", ["margin"])  # "difference" with the evidence model: see above
def test_contrasts_weigh_the_filters_even_without_class_weighting(contrast):
    # class_weighting=False explains with p(t|x) alone; a contrast must still compare the two
    # classes' filters, or every attribute would score 0 and the contrast would name nothing
    explainer, pooled = _fitted(ExplainerConfig(top_k=2, min_df=1, contrast=contrast, class_weighting=False))
    result = explainer.contrast(pooled[25], 1, 0)
    assert result.favour[0][0] == "blue crown" and result.against[0][0] == "red crown"


def test_printed_scores_are_the_readable_scores_of_the_cited_attributes():
    from saywhy.explain.attribute_models import ATTRIBUTE_MODELS

    for name in ATTRIBUTE_MODELS:  # each model's readable_at must agree with its readable matrix
        explainer, pooled = _fitted(ExplainerConfig(top_k=3, min_df=1, attribute_model=name))
        readable = explainer.readable_scores(pooled[:6], [0, 1, 0, 1, 0, 1])
        for i, explanation in enumerate(explainer.explain(pooled[:6], [0, 1, 0, 1, 0, 1])):
            assert explanation.attributes
            for term, score in explanation.attributes:
                assert score == pytest.approx(readable[i, VOCAB.index(term)], rel=1e-12)
