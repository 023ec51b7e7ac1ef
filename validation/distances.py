"""Distances between two measures given as weighted point sets (particles, or grid cells with their mass).

    W_p(mu, nu) = (min over couplings pi of mu and nu of  integral ||w - w'||^p dpi)^(1/p)

In one dimension both W1 and W2 are exact (POT's ``wasserstein_1d``, from the quantile
functions). In higher dimension they are sliced: the average over random directions theta of
the one-dimensional distance between the projections, a lower bound that metrises the same
convergence (POT's ``sliced_wasserstein_distance``). The kernel distance is
``sup_{j,k} |k_mu(x_j, x_k) - k_nu(x_j, x_k)|`` on the training inputs, the intrinsic kernels'
Gram matrices ``S = H Q H^T`` (docs/theory.md §2).
"""

from __future__ import annotations

import math

import numpy as np

from mfld.model.backend import chunks
from mfld.model.features import FeatureMap


def distance_names(p: int) -> tuple[str, str]:
    """What :func:`wasserstein` returns in dimension ``p``: W1, W2 (exact) for p = 1, SW1, SW2 (sliced) above."""
    return ("W1", "W2") if p == 1 else ("SW1 (sliced)", "SW2 (sliced)")


def wasserstein(
    Wa: np.ndarray,
    qa: np.ndarray | None,
    Wb: np.ndarray,
    qb: np.ndarray | None,
    rng: np.random.Generator | None = None,
    projections: int = 200,
) -> tuple[float, float]:
    """``(W1, W2)`` between ``sum_i qa_i delta_{Wa_i}`` and ``sum_i qb_i delta_{Wb_i}`` (None: uniform weights).

    Exact in one dimension, sliced over ``projections`` directions drawn from ``rng`` otherwise.
    """
    import ot

    if Wa.shape[1] != Wb.shape[1]:
        raise ValueError(f"the measures live in different dimensions: {Wa.shape[1]} and {Wb.shape[1]}")
    if Wa.shape[1] == 1:
        w1 = float(ot.wasserstein_1d(Wa[:, 0], Wb[:, 0], qa, qb, p=1))
        w2 = math.sqrt(float(ot.wasserstein_1d(Wa[:, 0], Wb[:, 0], qa, qb, p=2)))
        return w1, w2
    seed = int((rng or np.random.default_rng(0)).integers(2**31))
    kw = {"n_projections": projections, "seed": seed}
    w1 = float(ot.sliced_wasserstein_distance(Wa, Wb, qa, qb, p=1, **kw))
    w2 = float(ot.sliced_wasserstein_distance(Wa, Wb, qa, qb, p=2, **kw))
    return w1, w2


def gram(feature: FeatureMap, X: np.ndarray, W: np.ndarray, q: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``S = h(X; W) diag(q) h(X; W)^T``, the intrinsic kernel on the inputs ``X``, in chunks of points."""
    S = np.zeros((X.shape[0], X.shape[0]))
    for sl in chunks(W.shape[0], chunk):
        H = feature(X, W[sl])
        S += (H * q[sl]) @ H.T
    return S


def kernel_distance(
    feature: FeatureMap, X: np.ndarray, Wa: np.ndarray, qa: np.ndarray, Wb: np.ndarray, qb: np.ndarray
) -> float:
    """``sup_{j,k} |k_a(x_j, x_k) - k_b(x_j, x_k)|`` on the inputs ``X``."""
    return float(np.max(np.abs(gram(feature, X, Wa, qa) - gram(feature, X, Wb, qb))))
