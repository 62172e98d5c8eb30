"""Applications of the fitted explainer: grounding, retrieval, network debugging, faithfulness."""
