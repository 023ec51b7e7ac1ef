"""The two-timescale limiting functional on weighted point sets (THEORY.md section 2).

A measure is given as points ``W`` (N x p) with non-negative weights ``q`` (N,)
summing to one: particles have ``q_i = 1/N``, a grid has ``q_i = m_i |cell|``.
With ``H = h(X; W)`` (n x N) and ``Q = diag(q)``:

    S_mu   = H Q H^T                                   (n x n Gram matrix)
    c_mu   = (S_mu + n lam_a_bar I)^{-1} Y             (dual coefficients, n x T)
    a_mu   = H^T c_mu                                  (second layer, N x T)
    f_mu   = S_mu c_mu = Y - n lam_a_bar c_mu
    U(mu)  = (lam_a_bar / 2T) tr(Y^T c_mu)
    G(mu)  = U(mu) + (lam_w_bar / 2) E_mu ||w||^2
    V_mu(w)        = -(lam_a_bar / 2T) ||a_mu(w)||^2 + (lam_w_bar / 2) ||w||^2
    grad_w V_mu(w) = -(lam_a_bar / T) sum_t a_t(w) sum_j c_jt grad_w h(x_j; w) + lam_w_bar w

The dual system is solved by Cholesky on the smaller side: the n x n system
above when ``n <= N``, otherwise the N x N one from the push-through identity
``(B B^T + r I)^{-1} = (I - B (B^T B + r I)^{-1} B^T) / r`` with ``B = H Q^{1/2}``,
``r = n lam_a_bar``. Features are built in chunks of particles so that memory
stays within ``memory_budget`` bytes whatever N is. With a communicator
(:mod:`mfld.solver.distributed`) the points are this process's share of the
measure: local Gram matrices and sums are added across processes with one
Allreduce each, and the n x n system is solved by every process.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .backend import cholesky_solve, inverse_trace_from_cholesky, namespace
from .distributed import Serial
from .problem import Problem

DEFAULT_MEMORY_BUDGET = 512 * 2**20
# Temporaries alive per chunk, each n x chunk: Z, h(Z), h'(Z) (and sqrt(q) h(Z) in the Gram pass).
_ARRAYS_PER_CHUNK = 3


@dataclass
class Fit:
    """The second layer solved for one weighted point set.

    ``side`` is ``"n"`` when ``factor`` is the Cholesky factor of
    ``S + r I`` (n x n) and ``"N"`` when it is that of ``B^T B + r I`` (N x N);
    ``gram`` is the matrix that was factored, less ``r I``.
    """

    points: Any
    weights: Any
    coef: Any
    pred: Any
    U: float
    side: str
    gram: Any
    factor: Any
    Z: Any = None
    H: Any = None


def chunks(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(total)`` of length at most ``size``."""
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def validate_measure(W: Any, q: Any, p: int, signed: bool = False) -> None:
    """Refuse points of the wrong shape, non-finite values and (unless ``signed``) negative weights."""
    xp = namespace(W, q)
    if W.ndim != 2 or W.shape[1] != p:
        raise ValueError(f"points must have shape (N, p={p}), got {W.shape}")
    if q.shape != (W.shape[0],):
        raise ValueError(f"weights must have shape ({W.shape[0]},), got {q.shape}")
    if not bool(xp.all(xp.isfinite(W))):
        raise ValueError("points contain NaN or infinite values (did the dynamics diverge? reduce time.eta)")
    if not bool(xp.isfinite(xp.sum(q))) or (not signed and bool(xp.any(q < 0))):
        raise ValueError("weights must be finite and non-negative")


class TwoTimescaleFunctional:
    """``G(mu) = U(mu) + (lam_w_bar/2) E||w||^2`` with the second layer in closed form."""

    name = "two-timescale"

    def __init__(self, problem: Problem, memory_budget: int = DEFAULT_MEMORY_BUDGET, comm: Any = None) -> None:
        self.problem = problem
        self.memory_budget = int(memory_budget)
        self.comm = Serial() if comm is None else comm

    @property
    def dim(self) -> int:
        """Dimension of the space the measure lives on."""
        return self.problem.p

    def chunk_size(self, rows: int) -> int:
        """Columns per chunk so that the per-chunk temporaries fit the memory budget."""
        itemsize = self.problem.X.dtype.itemsize
        return max(1, self.memory_budget // (_ARRAYS_PER_CHUNK * itemsize * max(rows, 1)))

    def features(self, W: Any) -> tuple[Any, Any]:
        """Pre-activations and features ``(Z, H)`` of points ``W`` on the training inputs."""
        pb = self.problem
        Z = pb.feature.preactivation(pb.Xa, W)
        return Z, pb.feature.values(Z)

    # ----------------------------------------------------------------- fit
    def fit(self, W: Any, q: Any, features: tuple[Any, Any] | None = None, Y: Any = None, signed: bool = False) -> Fit:
        """Solve the second layer for the measure ``sum_i q_i delta_{W_i}``.

        ``features`` may pass precomputed ``(Z, H) = self.features(W)`` (a
        grid's fixed cell centres); ``Y`` replaces the training targets
        (label-noise procedure); ``signed`` admits negative weights (a spectral
        density's undershoots).
        """
        pb = self.problem
        validate_measure(W, q, pb.p, signed)
        Y = pb.Y if Y is None else Y
        N, n = W.shape[0], pb.n
        if N >= n or features is not None or self.comm.size > 1:
            return self._fit_n_side(W, q, features, Y)
        return self._fit_N_side(W, q, Y)

    def _ridge(self) -> float:
        return self.problem.n * self.problem.lam_a_bar

    def _fit_n_side(self, W: Any, q: Any, features: tuple[Any, Any] | None, Y: Any) -> Fit:
        pb, xp = self.problem, namespace(W)
        n = pb.n
        S = xp.zeros((n, n), dtype=pb.X.dtype)
        Z_keep = H = None
        if features is not None:
            Z_keep, H = features
            S += (H * q) @ H.T
        else:
            sqrt_q = xp.sqrt(q)
            size = self.chunk_size(n)
            for sl in chunks(W.shape[0], size):
                Z, Hc = self.features(W[sl])
                B = Hc * sqrt_q[sl]
                S += B @ B.T
                if size >= W.shape[0]:
                    Z_keep, H = Z, Hc
            S = self.comm.sum(S)
        r = self._ridge()
        K = S + r * xp.eye(n, dtype=S.dtype)
        C, L = cholesky_solve(K, Y)
        pred = Y - r * C
        U = 0.5 * pb.lam_a_bar * float(xp.sum(Y * C)) / pb.T
        return Fit(W, q, C, pred, U, "n", S, L, Z_keep, H)

    def _fit_N_side(self, W: Any, q: Any, Y: Any) -> Fit:
        pb, xp = self.problem, namespace(W)
        N = W.shape[0]
        sqrt_q = xp.sqrt(q)
        r = self._ridge()
        Z = pb.feature.preactivation(pb.Xa, W)
        H = pb.feature.values(Z)
        B = H * sqrt_q
        Gm = B.T @ B
        M = Gm + r * xp.eye(N, dtype=Gm.dtype)
        BtY = B.T @ Y
        sol, L = cholesky_solve(M, BtY)
        C = (Y - B @ sol) / r
        pred = Y - r * C
        U = 0.5 * pb.lam_a_bar * float(xp.sum(Y * C)) / pb.T
        return Fit(W, q, C, pred, U, "N", Gm, L, Z, H)

    # ------------------------------------------------- first variation, drift
    def _blocks(self, fit: Fit, W: Any) -> Iterator[tuple[slice, Any, Any]]:
        """``(slice, Z, H)`` over chunks of ``W``, reusing the fit's features when they are of ``W``."""
        if W is fit.points and fit.H is not None:
            Z = fit.Z
            yield slice(0, W.shape[0]), Z, fit.H
            return
        for sl in chunks(W.shape[0], self.chunk_size(self.problem.n)):
            Z, H = self.features(W[sl])
            yield sl, Z, H

    def second_layer(self, fit: Fit, W: Any = None) -> Any:
        """``a_mu(w) = h(X; w)^T c_mu`` at points ``W`` (N x T; default: the fit's own points)."""
        W = fit.points if W is None else W
        xp = namespace(W)
        out = xp.empty((W.shape[0], self.problem.T), dtype=W.dtype)
        for sl, _, Hc in self._blocks(fit, W):
            out[sl] = Hc.T @ fit.coef
        return out

    def first_variation_U(self, fit: Fit, W: Any = None) -> Any:
        """``dU/dmu(w) = -(lam_a_bar / 2T) ||a_mu(w)||^2`` at points ``W``."""
        xp = namespace(fit.coef)
        a = self.second_layer(fit, W)
        return -0.5 * self.problem.lam_a_bar * xp.sum(a * a, axis=1) / self.problem.T

    def potential(self, fit: Fit, W: Any = None) -> Any:
        """``V_mu(w) = dU/dmu(w) + (lam_w_bar / 2) ||w||^2`` = ``dG/dmu`` at points ``W``."""
        W = fit.points if W is None else W
        xp = namespace(W)
        return self.first_variation_U(fit, W) + 0.5 * self.problem.lam_w_bar * xp.sum(W * W, axis=1)

    def grad_potential(self, fit: Fit, W: Any = None, column_weights: Any = None) -> Any:
        """``grad_w V_mu(w)`` at points ``W`` (N x p); the drift is its negative.

        ``column_weights`` (one per column of the fit's targets) generalises
        ``-(lam_a_bar / 2T) sum_t ||a_t||^2`` to ``-(lam_a_bar / 2T) sum_t omega_t a_t^2``
        (the label-noise procedure uses ``omega = (1, ..., -1, ...)``).
        """
        pb = self.problem
        W = fit.points if W is None else W
        xp = namespace(W)
        out = xp.empty_like(W)
        scale = -pb.lam_a_bar / pb.T
        coef = scale * fit.coef if column_weights is None else scale * fit.coef * column_weights
        for sl, Z, H in self._blocks(fit, W):
            a = H.T @ fit.coef
            out[sl] = pb.feature.contract_grad(pb.Xa, pb.feature.derivative(Z, H), coef, a)
            out[sl] += pb.lam_w_bar * W[sl]
        return out

    # --------------------------------------------------------------- energy
    def energy(self, fit: Fit) -> dict[str, float]:
        """``U``, ``second_moment = E||w||^2`` and ``G = U + (lam_w_bar/2) E||w||^2``."""
        xp = namespace(fit.points)
        m2 = self.comm.sum(float(xp.sum(fit.weights * xp.sum(fit.points * fit.points, axis=1))))
        return {"U": fit.U, "second_moment": m2, "G": fit.U + 0.5 * self.problem.lam_w_bar * m2}

    def kernel_fit(self, fit: Fit) -> Fit:
        """The fit whose Gram matrix is the intrinsic kernel ``k_mu`` (itself here)."""
        return fit

    def predict(self, fit: Fit, X: Any) -> Any:
        """``f_mu(x) = sum_i q_i a_mu(w_i) h(x; w_i)`` at new inputs ``X`` (m x T)."""
        pb, W = self.problem, fit.points
        xp = namespace(W)
        Xa = pb.feature.augment(X)
        out = xp.zeros((X.shape[0], pb.T), dtype=W.dtype)
        for sl, _, H in self._blocks(fit, W):
            a = H.T @ fit.coef
            Ht = pb.feature.values(pb.feature.preactivation(Xa, W[sl]))
            out += Ht @ (fit.weights[sl, None] * a)
        return self.comm.sum(out)


def degrees_of_freedom(functional: Any, fit: Fit) -> float:
    """``df(mu) = tr[S_mu (S_mu + n lam_a_bar I)^{-1}]`` of the intrinsic kernel.

    From the Cholesky factor: ``df = m - r tr(K^{-1})`` with ``m`` the side of
    the factored system (the non-zero spectra of ``B B^T`` and ``B^T B`` agree).
    """
    kf = functional.kernel_fit(fit)
    r = functional.problem.n * functional.problem.lam_a_bar
    return kf.factor.shape[0] - r * inverse_trace_from_cholesky(kf.factor)


def kernel_alignment(functional: Any, fit: Fit, Y: Any = None) -> float:
    """``A(mu) = tr(Y^T S_mu Y) / (||Y||_F^2 ||S_mu||_F)`` in [0, 1] (Definition 5.1)."""
    kf = functional.kernel_fit(fit)
    Y = functional.problem.Y if Y is None else Y
    xp = namespace(Y)
    frob = float(xp.sqrt(xp.sum(kf.gram * kf.gram)))
    if kf.side == "n":
        num = float(xp.sum(Y * (kf.gram @ Y)))
    else:
        Hq = _features_weighted(functional, kf)
        BtY = Hq.T @ Y
        num = float(xp.sum(BtY * BtY))
    return num / (float(xp.sum(Y * Y)) * frob)


def _features_weighted(functional: Any, fit: Fit) -> Any:
    xp = namespace(fit.points)
    H = fit.H if fit.H is not None else functional.features(fit.points)[1]
    return H * xp.sqrt(fit.weights)


def parameter_alignment(problem: Problem, W: Any, q: Any) -> float:
    """``P(mu) = E_mu ||R^T u||^2 / ||u||^2`` with ``u`` the input weights (bias dropped).

    ``R`` is the target's relevant subspace (``u°`` for a single-index target).
    """
    if problem.relevant is None:
        return math.nan
    xp = namespace(W)
    u = W[:, : problem.d]
    proj = u @ problem.relevant
    ratio = xp.sum(proj * proj, axis=1) / xp.maximum(xp.sum(u * u, axis=1), 1e-300)
    return float(xp.sum(q * ratio))


class PriorOnlyFunctional:
    """``G(mu) = (lam_w_bar / 2) E||w||^2`` with ``U`` switched off.

    MFLD then is the Ornstein-Uhlenbeck process ``dw = -lam_w_bar w dt + sqrt(2 lam) dB``
    with stationary measure ``nu = N(0, I / lam_w)``: Gaussian initial data stay
    Gaussian with known mean and covariance, the exact reference for the solvers.
    """

    name = "prior"

    def __init__(self, problem: Problem, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> None:
        self.problem = problem

    @property
    def dim(self) -> int:
        return self.problem.p

    def features(self, W: Any) -> tuple[Any, Any]:
        return None, None

    def fit(self, W: Any, q: Any, features: Any = None, Y: Any = None, signed: bool = False) -> Fit:
        validate_measure(W, q, self.dim, signed)
        xp = namespace(W)
        pred = xp.full_like(self.problem.Y, xp.nan)  # no second layer is fitted
        return Fit(W, q, pred, pred, 0.0, "none", None, None)

    def potential(self, fit: Fit, W: Any = None) -> Any:
        W = fit.points if W is None else W
        return 0.5 * self.problem.lam_w_bar * namespace(W).sum(W * W, axis=1)

    def grad_potential(self, fit: Fit, W: Any = None) -> Any:
        W = fit.points if W is None else W
        return self.problem.lam_w_bar * W

    def energy(self, fit: Fit) -> dict[str, float]:
        xp = namespace(fit.points)
        m2 = float(xp.sum(fit.weights * xp.sum(fit.points * fit.points, axis=1)))
        return {"U": 0.0, "second_moment": m2, "G": 0.5 * self.problem.lam_w_bar * m2}

    def kernel_fit(self, fit: Fit) -> Fit:
        """The intrinsic kernel ``k_mu`` of the measure (defined whether or not U is on)."""
        return TwoTimescaleFunctional(self.problem).fit(fit.points, fit.weights)
