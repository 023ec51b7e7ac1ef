"""The label-noise procedure (docs/theory.md §4.6) and its expected dynamics.

At each step a fresh ``eps ~ Unif[-s, s]^{n x T}`` is drawn, the second layer is
fitted on ``Y + eps`` and the objective is the *clean* loss of that fit:

    U_eps(mu) = (1/2n) ||S c_eps - Y||^2 + (lam_a_bar / 2) c_eps^T S c_eps,   c_eps = K^{-1} (Y + eps)

with ``K = S + n lam_a_bar I``. Writing ``a = h^T K^{-1} Y`` (the clean second
layer) and ``b_eps = h^T K^{-1} eps`` (the second layer fitted to the noise
alone), its first variation is

    dU_eps/dmu(w) = -(lam_a_bar / 2) a(w)^2 + (lam_a_bar / 2) b_eps(w)^2

and, with ``E eps eps^T = (s^2 / 3) I``,

    E U_eps(mu)      = U(mu) + (s^2 / 6n) df(mu)
    E dU_eps/dmu(w)  = dU/dmu(w) + (s^2 / 6n) d df/dmu(w),   d df/dmu(w) = n lam_a_bar ||K^{-1} h(X; w)||^2

so the procedure runs, in expectation, the MFLD of ``Obj + (s^2 / 6n) df``: it
penalises the degrees of freedom. (The paper's summary writes the coefficient as
``lam_a_bar s^2 / 6n``; with the normalisation ``U = (lam_a_bar/2) Y^T K^{-1} Y``
of its section 2 the derivation above gives ``s^2 / 6n``, and
``tests/model/test_label_noise.py`` confirms it by Monte Carlo.)

Particles run the procedure itself through :class:`LabelNoiseDrift`; densities
run its expectation, :class:`ExpectedLabelNoiseFunctional`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .backend import Array, namespace
from .distributed import Communicator
from .dual_solve import dual_objective
from .functional import Fit
from .observables import degrees_of_freedom
from .problem import Problem
from .two_timescale import TwoTimescaleFunctional


def penalty_coefficient(problem: Problem, s: float) -> float:
    """``s^2 / 6n``: the weight of df in the expected objective of the procedure at noise level ``s``."""
    return s * s / (6.0 * problem.n)


def procedure_gradient(functional: TwoTimescaleFunctional, W: Array, q: Array, eps: Array) -> tuple[Array, Fit]:
    """``grad_w dU_eps/dmu + lam_w_bar w`` at the particles for one noise draw; also the clean fit.

    One Cholesky factorisation serves both right-hand sides ``[Y, eps]``.
    """
    pb = functional.problem
    xp = namespace(W)
    both = functional.fit(W, q, Y=xp.concatenate([pb.Y, eps], axis=1))
    T = pb.T
    weights = xp.asarray(np.r_[np.ones(T), -np.ones(T)], dtype=W.dtype)
    grad = functional.grad_potential(both, W, column_weights=weights)
    C = both.coef[:, :T]
    clean = Fit(
        W,
        q,
        C,
        pb.Y - pb.n * pb.lam_a_bar * C,
        dual_objective(pb, pb.Y, C),
        both.side,
        both.gram,
        both.factor,
        both.Z,
        both.H,
    )
    return grad, clean


class LabelNoiseDrift:
    """The drift of the procedure at level ``s``: ``-grad_w (dU_eps/dmu + lam_w_bar |w|^2 / 2)``.

    ``draw(step, shape, low, high)`` returns the step's ``eps`` (the same on every
    process); the fit of the measure is not used, since the procedure refits on
    ``Y + eps``.
    """

    def __init__(
        self, functional: TwoTimescaleFunctional, s: float, draw: Callable[[int, tuple[int, ...], float, float], Array]
    ) -> None:
        if not s > 0:
            raise ValueError(f"model.label_noise must be > 0 for the procedure, got {s}")
        self.functional, self.s, self.draw = functional, float(s), draw

    def __call__(self, W: Array, q: Array, step: int, fit: Fit | None = None) -> Array:
        Y = self.functional.problem.Y
        eps = namespace(W).asarray(self.draw(step, Y.shape, -self.s, self.s), dtype=Y.dtype)
        return -procedure_gradient(self.functional, W, q, eps)[0]


def _K(functional: TwoTimescaleFunctional, fit: Fit) -> Array:
    if fit.side != "n" or fit.gram is None:
        raise ValueError("the df first variation needs the n x n factorisation (N >= n or grid features)")
    xp = namespace(fit.gram)
    return fit.gram + functional.ridge * xp.eye(functional.problem.n, dtype=fit.gram.dtype)


def df_first_variation(functional: TwoTimescaleFunctional, fit: Fit, W: Array | None = None) -> Array:
    """``d df/dmu(w) = n lam_a_bar ||K^{-1} h(X; w)||^2`` (n-side fits)."""
    pb = functional.problem
    W = fit.points if W is None else W
    K = _K(functional, fit)
    xp = namespace(W)
    out = xp.empty(W.shape[0], dtype=W.dtype)
    for sl, Z, H in functional.blocks(fit, W):
        KinvH = xp.linalg.solve(K, H)  # many right-hand sides: one LU beats column-wise triangular solves
        out[sl] = xp.sum(KinvH * KinvH, axis=0)
        del Z, H  # views of the chunk: dropped before the next chunk is formed
    return pb.n * pb.lam_a_bar * out


def df_first_variation_gradient(functional: TwoTimescaleFunctional, fit: Fit, W: Array | None = None) -> Array:
    """``grad_w d df/dmu(w) = 2 n lam_a_bar sum_j (K^{-2} h(X; w))_j grad_w h(x_j; w)`` (N x p)."""
    pb = functional.problem
    W = fit.points if W is None else W
    K = _K(functional, fit)
    xp = namespace(W)
    out = xp.empty_like(W)
    for sl, Z, H in functional.blocks(fit, W):
        M = xp.linalg.solve(K, xp.linalg.solve(K, H))
        out[sl] = pb.feature.pullback(pb.Xa, W[sl], Z, H, M)
    return 2.0 * pb.n * pb.lam_a_bar * out


class ExpectedLabelNoiseFunctional:
    """``G + (s^2 / 6n) df``: the functional whose MFLD the procedure follows in expectation."""

    name = "two-timescale+label-noise"

    def __init__(self, base: TwoTimescaleFunctional, s: float) -> None:
        self.base, self.s = base, float(s)
        self.problem = base.problem
        self.comm: Communicator = base.comm
        self.weight = penalty_coefficient(base.problem, s)

    @property
    def dim(self) -> int:
        return self.base.dim

    def features(self, W: Array) -> tuple[Array, Array]:
        return self.base.features(W)

    def fit(
        self,
        W: Array,
        q: Array,
        features: tuple[Array, Array] | None = None,
        Y: Array | None = None,
        signed: bool = False,
    ) -> Fit:
        return self.base.fit(W, q, features, Y, signed)

    def potential(self, fit: Fit, W: Array | None = None) -> Array:
        return self.base.potential(fit, W) + self.weight * df_first_variation(self.base, fit, W)

    def grad_potential(self, fit: Fit, W: Array | None = None) -> Array:
        return self.base.grad_potential(fit, W) + self.weight * df_first_variation_gradient(self.base, fit, W)

    def energy(self, fit: Fit) -> dict[str, float]:
        e = self.base.energy(fit)
        e["G"] += self.weight * degrees_of_freedom(self.base, fit)
        return e

    def kernel_fit(self, fit: Fit) -> Fit:
        return self.base.kernel_fit(fit)

    def solver_state(self) -> dict[str, Array]:
        return self.base.solver_state()

    def restore_solver(self, state: Mapping[str, Array]) -> None:
        self.base.restore_solver(state)

    def predict(self, fit: Fit, X: Array) -> Array:
        return self.base.predict(fit, X)
