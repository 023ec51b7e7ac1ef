"""The entropy of a measure known only by samples: the Kozachenko-Leonenko estimate and its standard error.

Particles carry no density, so ``Ent(mu) = int mu log mu``, and with it the objective ``G + lam Ent``, is an
estimate from the particles' nearest-neighbour distances: consistent as N grows, biased at finite N (more so in
high dimension), and random. :func:`knn_entropy_se` says how random.
"""

from __future__ import annotations

import math

import numpy as np

SE_GROUPS = 8
"""Disjoint groups the sample is split into for :func:`knn_entropy_se`."""

SE_MIN_GROUP = 20
"""The fewest points a group may hold; smaller samples use fewer groups (none below two: nan)."""


def knn_entropy(W: np.ndarray) -> float:
    """Kozachenko-Leonenko nearest-neighbour estimate of ``int mu log mu``.

        Ent ~ -[psi(N) - psi(1) + log V_p + (p/N) sum_i log eps_i]

    with ``eps_i`` the distance from ``w_i`` to its nearest neighbour and ``V_p``
    the volume of the unit ball in ``R^p``. Consistent as ``N -> infinity`` but
    biased in high dimension; runs use it only to report the objective.
    """
    from scipy.spatial import cKDTree
    from scipy.special import digamma, gammaln

    W = np.asarray(W, dtype=np.float64)
    N, p = W.shape
    dist, _ = cKDTree(W).query(W, k=2)
    eps = np.maximum(dist[:, 1], 1e-300)
    log_vp = 0.5 * p * math.log(math.pi) - gammaln(0.5 * p + 1.0)
    return -float(digamma(N) - digamma(1) + log_vp + p * np.mean(np.log(eps)))


def knn_entropy_se(W: np.ndarray) -> float:
    """The standard error of :func:`knn_entropy` on ``W``, by subsampling.

    The sample is split into ``K`` disjoint groups by index (``i mod K``; the particles are exchangeable, so these
    are random subsets, and no random numbers are drawn), the estimate is taken on each, and, its variance being
    O(1/N), ``se = sd(E_1 .. E_K) / sqrt(K)``: the spread of K estimates at N / K points scaled to one at N. It
    measures the estimate's randomness, not its bias (which the groups, at N / K, have more of).
    """
    W = np.asarray(W, dtype=np.float64)
    groups = min(SE_GROUPS, W.shape[0] // SE_MIN_GROUP)
    if groups < 2:
        return math.nan
    estimates = [knn_entropy(W[k::groups]) for k in range(groups)]
    return float(np.std(estimates, ddof=1) / math.sqrt(groups))
