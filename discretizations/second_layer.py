"""The classical objective's second layer moved exactly: a particle scheme without the ``eta r`` step limit.

With the second layer r times faster (``model.second_layer_rate``, docs/theory.md §7) an explicit step needs
``eta r lam lam_a < 1`` and ``eta r`` times the data term's curvature in ``a`` small: its steps grow like r. But
with the first layers ``w`` frozen, the second layers ``a`` (N x T, equal weights ``1 / N``) of all particles follow
one linear SDE,

    da = -r (M a - c) dt + sqrt(2 lam r) dB,     M = lam lam_a I + B B^T,     c = H^T Y / (n T),

with ``H = h(X; w)`` (n x N) and ``B = H^T / sqrt(N n T)`` of rank at most n, since the data term's gradient
``h_i^T R`` is linear in the a's through the prediction ``f = H a / N``. Its exact solution over a step: with the
thin SVD ``B = U S V^T``, M is ``mu_k = lam lam_a + S_k^2`` on the columns of U and ``lam lam_a`` on their
complement; around ``a* = M^{-1} c`` the deviation decays by ``exp(-r eta mu)`` and gains Gaussian noise of variance
``lam (1 - exp(-2 r eta mu)) / mu`` in each direction. Cost: the SVD, O(N n^2).

One step (Lie splitting): the exact a-update at the current w, then an Euler-Maruyama step of w with the drift at
the new a. Unconditionally stable in r (the w step keeps its own limit ``eta lam lam_w < 1``); first order in
eta. As ``r eta -> infinity`` the a's land on ``a*``, the finite-N kernel ridge solution, and the w step is the
two-timescale Euler step (tests/discretizations/test_second_layer.py checks that identity).
"""

from __future__ import annotations

import math

from mfld.model.backend import Array, namespace
from mfld.model.classical import ClassicalFunctional
from mfld.model.functional import Drift, Fit, GradientDrift

from .particles import PARTICLE_SCHEMES, MobileDrift, euler_maruyama


class ExactSecondLayer:
    """The scheme of the module doc, for the classical objective at any second-layer rate (its gradient drift,
    with the rate's :class:`~mfld.discretizations.particles.MobileDrift` when r > 1). Any other drift (a measure on
    w alone: the two-timescale objective, the label-noise procedure) has no second layer in the measure, and the
    step is Euler-Maruyama's."""

    levels = 0
    second_layer_exact = True
    """Tells :class:`~mfld.discretizations.particles.Particles` that the ``eta r`` limit does not apply."""

    def __init__(self, history: tuple[Array, ...] = ()) -> None:
        del history  # no levels

    @staticmethod
    def _classical(drift: Drift) -> ClassicalFunctional | None:
        """The classical objective whose gradient drift (times its mobility) ``drift`` is, or None."""
        gradient = drift.drift if isinstance(drift, MobileDrift) else drift
        functional = getattr(gradient, "functional", None) if isinstance(gradient, GradientDrift) else None
        if not isinstance(functional, ClassicalFunctional):
            return None
        if functional.comm.size > 1:
            raise ValueError("particles.scheme = 'exact-second-layer' needs every particle in one process (no MPI)")
        return functional

    def __call__(
        self,
        W: Array,
        q: Array,
        drift: Drift,
        eta: float,
        lam: float,
        xi: Array | None,
        step: int,
        fit: Fit | None = None,
    ) -> Array:
        functional = self._classical(drift)
        if functional is None:  # a measure on w alone has no second layer to move: Euler-Maruyama
            return euler_maruyama(W, q, drift, eta, lam, xi, step, fit)
        rate = float(functional.rate)
        pb = functional.problem
        xp = namespace(W)
        T = pb.T
        A = W[:, :T]
        features = functional.features(W)  # of w, which the a-update leaves: the w step below reuses them
        H = features[1]
        scale = 1.0 / (pb.n * T)
        # Equal weights q_i = 1 / N (particles): B B^T = H^T H / (N n T).
        U, S, _ = xp.linalg.svd(H.T * xp.sqrt(q[:, None] * scale), full_matrices=False)
        mu, mu0 = pb.lam_a_bar + S * S, pb.lam_a_bar

        def apply(g: Array, g0: float, v: Array) -> Array:
            """``g(M) v``: ``g(mu_k)`` on the columns of U, ``g0`` on their complement."""
            Uv = U.T @ v
            return U @ (g[:, None] * Uv) + g0 * (v - U @ Uv)

        c = scale * (H.T @ pb.Y)
        star = apply(1.0 / mu, 1.0 / mu0, c)
        A_new = star + apply(xp.exp(-rate * eta * mu), math.exp(-rate * eta * mu0), A - star)
        if xi is not None:
            xa = xi[:, :T] / math.sqrt(rate)  # Particles scaled the noise by sqrt(D); the exact variance is below
            sd = xp.sqrt(lam * -xp.expm1(-2.0 * rate * eta * mu) / mu)
            A_new = A_new + apply(sd, math.sqrt(lam * -math.expm1(-2.0 * rate * eta * mu0) / mu0), xa)
        mid = xp.concatenate([A_new, W[:, T:]], axis=1)
        w_new = W[:, T:] + eta * drift(mid, q, step, functional.fit(mid, q, features))[:, T:]
        if xi is not None:
            w_new = w_new + math.sqrt(2.0 * eta * lam) * xi[:, T:]
        return xp.concatenate([A_new, w_new], axis=1)


PARTICLE_SCHEMES.add(
    "exact-second-layer",
    ExactSecondLayer,
    "classical objective at a second-layer rate r: the second layer moved exactly (linear in a), w by Euler-Maruyama",
)
