"""The probabilistic core: the paper's equations as pure array code (no I/O, no torch)."""
