"""Explanations: the fitted explainer and the sentences it writes."""
