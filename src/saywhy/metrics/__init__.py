"""Metrics that compare outputs with ground truth: PCK, retrieval, BLEU."""
