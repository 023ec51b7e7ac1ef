"""The paper's experiments: alignment, Figures 1 and 2, label noise, sample complexity."""
