"""Faithfulness: removing filters changes the class score exactly as the linear head says."""
import numpy as np
import scipy.sparse as sp

from saywhy.apps.faithfulness import explanation_filters, faithfulness, removal_effect
from saywhy.explain.explainer import Explainer, ExplainerConfig


def _explainer():
    # 3 filters; filter 0 is the "red crown" filter and the only one class 0 relies on.
    pooled = np.array([[4.0, 1.0, 0.5], [3.0, 1.0, 0.5], [0.1, 1.0, 4.0], [0.2, 1.0, 3.0]])
    counts = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1]]))
    weights = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    config = ExplainerConfig(top_k=1, min_df=1, sigma_activation="l1")
    return Explainer(config).fit(pooled, counts, ["red crown", "blue crown", "small bird"], weights, ["A", "B"]), pooled


def test_explanation_filter_of_a_red_crown_image_is_the_red_crown_filter():
    explainer, pooled = _explainer()
    assert explanation_filters(explainer, pooled[:1], np.array([0]), 1).tolist() == [[0]]


def test_removal_drop_is_exact():
    explainer, pooled = _explainer()
    result = removal_effect(explainer, pooled[:1], np.array([0]), np.array([[0]]))
    assert result.logit_drop == 8.0  # phi_0 * w_00 = 4 * 2
    assert result.flipped == 1.0  # with filter 0 gone, class B (0.5 * 2 = 1) wins over A (0)


def test_explanation_filters_matter_more_than_random_ones():
    explainer, pooled = _explainer()
    result = faithfulness(explainer, pooled, sizes=(1,), random_draws=20)["1"]
    assert result["explanation filters"]["logit_drop"] > result["random filters"]["logit_drop"]
    assert result["explanation filters"]["logit_drop"] == result["class's top-weighted filters"]["logit_drop"]
