"""The particles' entropy estimate and its standard error (discretizations/entropy.py)."""

import math

import numpy as np

from mfld.discretizations.entropy import knn_entropy, knn_entropy_se


def test_the_standard_error_is_the_spread_of_the_estimate_over_independent_samples():
    """Over 200 independent samples of N = 2000 from N(0, I_2) the estimate's standard deviation is measured; the
    subsampling s.e. of 50 of those samples averages to it. Tolerance 25 %: one s.e. estimate from 8 groups
    scatters by about 1/sqrt(2 * 7) = 27 %, 50 of them average to 4 %, and 200 samples fix the measured spread to
    5 %; the rest is room for the O(1/N) scaling from N / 8 to N."""
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((2000, 2)) for _ in range(200)]
    estimates = [knn_entropy(W) for W in samples]
    measured = float(np.std(estimates, ddof=1))
    se = float(np.mean([knn_entropy_se(W) for W in samples[:50]]))
    assert abs(se / measured - 1) < 0.25, (se, measured)
    exact = -(1 + math.log(2 * math.pi))  # int g log g of the standard Gaussian in 2-D
    assert abs(np.mean(estimates) - exact) < 4 * measured / math.sqrt(200) + 0.01  # consistent, small bias


def test_too_few_points_for_two_groups_give_nan():
    assert math.isnan(knn_entropy_se(np.random.default_rng(1).standard_normal((39, 2))))
    assert math.isfinite(knn_entropy_se(np.random.default_rng(1).standard_normal((40, 2))))
