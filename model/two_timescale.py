"""The two-timescale limiting functional on weighted point sets (docs/theory.md §2).

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
(:mod:`mfld.model.distributed`) the points are this process's share of the
measure: local Gram matrices and sums are added across processes with one
Allreduce each, and the n x n system is solved by every process.
"""

from __future__ import annotations

from collections.abc import Iterator

from .backend import Array, cholesky_solve, namespace
from .distributed import Communicator, Serial
from .functional import DEFAULT_MEMORY_BUDGET, Fit, chunks, second_moment, validate_measure
from .problem import Problem

# Temporaries alive per chunk, each n x chunk: Z, h(Z), h'(Z) (and sqrt(q) h(Z) in the Gram pass).
_ARRAYS_PER_CHUNK = 3


class TwoTimescaleFunctional:
    """``G(mu) = U(mu) + (lam_w_bar/2) E||w||^2`` with the second layer in closed form."""

    name = "two-timescale"

    def __init__(
        self, problem: Problem, memory_budget: int = DEFAULT_MEMORY_BUDGET, comm: Communicator | None = None
    ) -> None:
        self.problem = problem
        self.memory_budget = int(memory_budget)
        self.comm: Communicator = Serial() if comm is None else comm

    @property
    def dim(self) -> int:
        """Dimension of the space the measure lives on."""
        return self.problem.p

    @property
    def ridge(self) -> float:
        """``r = n lam_a_bar``, the ridge of the dual system."""
        return self.problem.n * self.problem.lam_a_bar

    def chunk_size(self, rows: int) -> int:
        """Columns per chunk so that the per-chunk temporaries fit the memory budget."""
        itemsize = self.problem.X.dtype.itemsize
        return max(1, self.memory_budget // (_ARRAYS_PER_CHUNK * itemsize * max(rows, 1)))

    def features(self, W: Array) -> tuple[Array, Array]:
        """The feature map's cache and values ``(Z, H)`` of points ``W`` on the training inputs."""
        pb = self.problem
        return pb.feature.evaluate(pb.Xa, W)

    # ----------------------------------------------------------------- fit
    def fit(
        self, W: Array, q: Array, features: tuple[Array, Array] | None = None, Y: Array | None = None,
        signed: bool = False,
    ) -> Fit:
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
        if N >= n or features is not None or self.comm.size > 1 or signed:
            return self._fit_n_side(W, q, features, Y, signed)
        return self._fit_N_side(W, q, Y)

    def _fit_n_side(self, W: Array, q: Array, features: tuple[Array, Array] | None, Y: Array,
                    signed: bool = False) -> Fit:
        pb, xp = self.problem, namespace(W)
        n = pb.n
        S = xp.zeros((n, n), dtype=pb.X.dtype)
        Z_keep = H = None
        if features is not None:
            Z_keep, H = features
            S += (H * q) @ H.T
        else:
            sqrt_q = None if signed else xp.sqrt(q)
            size = self.chunk_size(n)
            for sl in chunks(W.shape[0], size):
                Z, Hc = self.features(W[sl])
                if signed:  # no square root of negative weights: the general product instead of B B^T
                    S += (Hc * q[sl]) @ Hc.T
                else:
                    B = Hc * sqrt_q[sl]
                    S += B @ B.T
                if size >= W.shape[0]:
                    Z_keep, H = Z, Hc
            S = self.comm.sum(S)
        r = self.ridge
        K = S + r * xp.eye(n, dtype=S.dtype)
        C, L = cholesky_solve(K, Y)
        pred = Y - r * C
        U = 0.5 * pb.lam_a_bar * float(xp.sum(Y * C)) / pb.T
        return Fit(W, q, C, pred, U, "n", S, L, Z_keep, H)

    def _fit_N_side(self, W: Array, q: Array, Y: Array) -> Fit:
        pb, xp = self.problem, namespace(W)
        N = W.shape[0]
        sqrt_q = xp.sqrt(q)
        r = self.ridge
        Z, H = self.features(W)
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
    def blocks(self, fit: Fit, W: Array) -> Iterator[tuple[slice, Array, Array]]:
        """``(slice, Z, H)`` over chunks of ``W``, reusing the fit's features when they are of ``W``."""
        if W is fit.points and fit.H is not None:
            yield slice(0, W.shape[0]), fit.Z, fit.H
            return
        for sl in chunks(W.shape[0], self.chunk_size(self.problem.n)):
            Z, H = self.features(W[sl])
            yield sl, Z, H

    def second_layer(self, fit: Fit, W: Array | None = None) -> Array:
        """``a_mu(w) = h(X; w)^T c_mu`` at points ``W`` (N x T; default: the fit's own points)."""
        W = fit.points if W is None else W
        xp = namespace(W)
        out = xp.empty((W.shape[0], self.problem.T), dtype=W.dtype)
        for sl, _, Hc in self.blocks(fit, W):
            out[sl] = Hc.T @ fit.coef
        return out

    def first_variation_U(self, fit: Fit, W: Array | None = None) -> Array:
        """``dU/dmu(w) = -(lam_a_bar / 2T) ||a_mu(w)||^2`` at points ``W``."""
        xp = namespace(fit.coef)
        a = self.second_layer(fit, W)
        return -0.5 * self.problem.lam_a_bar * xp.sum(a * a, axis=1) / self.problem.T

    def potential(self, fit: Fit, W: Array | None = None) -> Array:
        """``V_mu(w) = dU/dmu(w) + (lam_w_bar / 2) ||w||^2`` = ``dG/dmu`` at points ``W``."""
        W = fit.points if W is None else W
        xp = namespace(W)
        return self.first_variation_U(fit, W) + 0.5 * self.problem.lam_w_bar * xp.sum(W * W, axis=1)

    def grad_potential(self, fit: Fit, W: Array | None = None, column_weights: Array | None = None) -> Array:
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
        for sl, Z, H in self.blocks(fit, W):
            a = H.T @ fit.coef
            out[sl] = pb.feature.contract_grad(pb.Xa, W[sl], Z, H, coef, a)
            out[sl] += pb.lam_w_bar * W[sl]
        return out

    # --------------------------------------------------------------- energy
    def energy(self, fit: Fit) -> dict[str, float]:
        """``U``, ``second_moment = E||w||^2`` and ``G = U + (lam_w_bar/2) E||w||^2``."""
        m2 = self.comm.sum(second_moment(fit, fit.points))
        return {"U": fit.U, "second_moment": m2, "G": fit.U + 0.5 * self.problem.lam_w_bar * m2}

    def kernel_fit(self, fit: Fit) -> Fit:
        """The fit whose Gram matrix is the intrinsic kernel ``k_mu`` (itself here)."""
        return fit

    def predict(self, fit: Fit, X: Array) -> Array:
        """``f_mu(x) = sum_i q_i a_mu(w_i) h(x; w_i)`` at new inputs ``X`` (m x T)."""
        pb, W = self.problem, fit.points
        xp = namespace(W)
        Xa = pb.feature.augment(X)
        out = xp.zeros((X.shape[0], pb.T), dtype=W.dtype)
        for sl, _, H in self.blocks(fit, W):
            a = H.T @ fit.coef
            Ht = pb.feature.evaluate(Xa, W[sl])[1]
            out += Ht @ (fit.weights[sl, None] * a)
        return self.comm.sum(out)
