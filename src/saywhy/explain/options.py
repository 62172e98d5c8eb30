"""The names of every choice an explainer takes, with no imports: the command line checks
options against them before it loads numpy, scipy or torch.

The modules that implement each choice check that they agree (``tests/test_cli_behaviour.py``).
"""
from __future__ import annotations

SIGMAS = ("l1", "softmax", "minmax", "identity")  # saywhy.core.normalization.SIGMAS
SIGMA_ACTIVATIONS = ("top", *SIGMAS)
CONTRASTS = ("margin", "difference")
FILTER_SCALES = ("none", "max")  # saywhy.core.filter_attribute.FILTER_SCALES
PRIORS = ("tfidf", "tfidf_sum", "uniform")  # saywhy.core.prior.PRIOR_KINDS
LIKELIHOODS = ("sum", "mean")  # saywhy.core.filter_attribute.LIKELIHOODS
ATTRIBUTE_MODELS = ("evidence", "cooccurrence")  # saywhy.explain.attribute_models.ATTRIBUTE_MODELS
GROUNDINGS = ("signed", "positive", "part")
SENTENCES = ("natural", "paper")
PART_GROUNDINGS = ("none", "maps", "maps_alpha")  # saywhy.core.part_maps.PART_GROUNDINGS
EVIDENCE_POOLINGS = ("auto", "global", "part", "both")  # "auto", then saywhy.core.part_pooling.POOLINGS
RETRIEVAL_SCORES = ("class", "image")  # ExplainerConfig.retrieval_score: what Table 2 and search rank images by
VISIBILITY_SOURCES = ("pooled", "peak", "both")  # ExplainerConfig.visibility_source: saywhy.core.part_maps.PartMaps
