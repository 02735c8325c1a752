"""The paper's experiments at a size this machine runs: `compound demo`."""
