"""Theory checks: convexity, the linear rate, particles against the grid, accuracy against cost."""
