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
    np.testing.assert_allclose(explainer.class_pdf().sum(axis=1), 1.0)


def test_class_description_with_the_evidence_model():
    explainer, _ = _fitted()
    assert explainer.describe(1).attributes[0][0] == "blue crown"
    assert explainer.describe(0).attributes[0][0] == "red crown"
    pdf = explainer.class_pdf()
    assert pdf.shape == (2, 4) and ((pdf > 0) & (pdf < 1)).all()


def test_save_load_round_trip_gives_identical_explanations(tmp_path):
    explainer, pooled = _fitted()
    explainer.save(tmp_path / "exp")
    loaded = Explainer.load(tmp_path / "exp")
    assert loaded.config == explainer.config
    assert [e.to_dict() for e in loaded.explain(pooled)] == [e.to_dict() for e in explainer.explain(pooled)]
    assert not list(tmp_path.glob(".exp.*")), "no temp folder left behind"


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


@pytest.mark.parametrize("field, value", [("sigma_activation", "softmax"), ("sigma_decision", "minmax"),
                                          ("likelihood", "mean"), ("filter_scale", "max"), ("prior", "uniform")])
def test_every_option_still_finds_the_red_crown(field, value):
    config = ExplainerConfig(top_k=2, min_df=1, **{field: value})
    explainer, pooled = _fitted(config)
    assert explainer.explain(pooled[:1])[0].attributes[0][0] == "red crown"


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
    assert explainer.evidence_ is None
    contributions = np.maximum(pooled[:3] * explainer.weights_[explainer.predict(pooled[:3])], 0)
    expected = (contributions / contributions.sum(axis=1, keepdims=True)) @ explainer.filter_attribute_pdf_
    np.testing.assert_allclose(explainer.attribute_pdf(pooled[:3]), expected)


def test_unknown_setting_is_one_clear_error():
    with pytest.raises(SaywhyError, match="unknown attribute model 'bayes': choose one of evidence, cooccurrence"):
        ExplainerConfig(attribute_model="bayes")


def test_evidence_model_reads_each_filter_through_eq_6():
    """p(t|x,c) = sigmoid(b + F sum_k a_k phi_k p(f_k|x,c)); uniform p(f|x,c) gives back p(t|x)."""
    explainer, pooled = _fitted()
    evidence = explainer.evidence_
    x = pooled[:2]
    contributions = np.maximum(x * explainer.weights_[[0, 0]], 0)
    p_filter = contributions / contributions.sum(axis=1, keepdims=True)
    logits = (x * 4 * p_filter) @ evidence.weights.T + evidence.bias
    np.testing.assert_allclose(explainer.attribute_pdf(x, np.array([0, 0])), 1 / (1 + np.exp(-logits)))
    np.testing.assert_allclose(evidence.probability(x, np.full((2, 4), 0.25)), evidence.probability(x))


def test_grounding_alphas_are_the_evidence_weights():
    explainer, _ = _fitted()
    np.testing.assert_array_equal(explainer.grounding_alphas(), explainer.evidence_.weights.T)
    positive, _ = _fitted(ExplainerConfig(top_k=2, min_df=1, grounding="positive"))
    np.testing.assert_array_equal(positive.grounding_alphas(), np.maximum(positive.evidence_.weights.T, 0))
    assert int(explainer.grounding_alphas()[:, 0].argmax()) == 0  # red crown: the red-crown filter
    part, _ = _fitted(ExplainerConfig(top_k=2, min_df=1, grounding="part"))  # "red crown" and "blue crown" share one map
    alphas, evidence = part.grounding_alphas(), part.evidence_.weights.T
    images = part.statistics_.attribute_images
    crown = (evidence[:, 0] * images[0] + evidence[:, 1] * images[1]) / (images[0] + images[1])
    np.testing.assert_allclose(alphas[:, 0], crown, atol=1e-9)
    np.testing.assert_allclose(alphas[:, 1], crown, atol=1e-9)
    np.testing.assert_allclose(alphas[:, 2], evidence[:, 2])  # the only eyebrow attribute keeps its own


def test_natural_sentence_uses_learned_forms():
    from saywhy.text.surface import learn_surface_forms

    pooled, counts, weights = _data()
    captions = ["this small bird has a red crown and a white eyebrow", "a bird with a blue crown", "small bird"]
    explainer = Explainer(ExplainerConfig(top_k=4, min_df=1)).fit(
        pooled, counts, VOCAB, weights, CLASSES, surface_forms=learn_surface_forms(captions, VOCAB))
    sentence = explainer.explain(pooled[:1])[0].sentence
    assert sentence.startswith("This is a Red-capped Wren, a small bird, because it has a red")
    assert "small bird" not in sentence.split("because")[1]


def test_top_sigma_counts_each_filters_most_activating_images():
    explainer, pooled = _fitted(ExplainerConfig(top_k=2, min_df=1, sigma_activation="top", top_fraction=0.25))
    # filter 0 (red crowns) counts its 10 most activating images: all red-crowned, so
    # "blue crown" gets no probability from it at all
    assert explainer.statistics_.likelihood_sum[VOCAB.index("blue crown"), 0] == 0
    assert explainer.statistics_.likelihood_sum[VOCAB.index("red crown"), 0] == 10


def test_strong_evidence_is_ranked_by_log_odds_not_by_rounded_probabilities():
    from saywhy.core.attribute_evidence import AttributeEvidence

    explainer, pooled = _fitted(ExplainerConfig(top_k=2, min_df=1, class_weighting=False))
    # logits 50 and 80 both round to p = 1.0; vocabulary order alone would put "red crown" first
    explainer.evidence_ = AttributeEvidence(np.zeros((4, 4)), np.array([50.0, 80.0, -5.0, -5.0]))
    explanation = explainer.explain(pooled[:1])[0]
    assert [t for t, _ in explanation.attributes] == ["blue crown", "red crown"]
    assert [p for _, p in explanation.attributes] == [1.0, 1.0]
    np.testing.assert_allclose(explainer.attribute_log_pdf(pooled[:1])[0, :2], [-np.exp(-50.0), -np.exp(-80.0)])


def test_evidence_explanations_carry_the_evidence_they_are_ranked_by():
    explainer, pooled = _fitted()
    explanation = explainer.explain(pooled[:1])[0]
    assert explanation.evidence is not None and explanation.evidence == sorted(explanation.evidence, reverse=True)
    np.testing.assert_allclose([p for _, p in explanation.attributes], 1 / (1 + np.exp(-np.array(explanation.evidence))))
    paper, _ = _fitted(ExplainerConfig.paper(top_k=2, min_df=1))
    assert paper.explain(pooled[:1])[0].evidence is None
