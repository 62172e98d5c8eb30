"""Model side: layer discovery, hooks, activation extraction, the demo CNN and its training."""
