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

import logging
import warnings
from collections import deque
from collections.abc import Iterator, Mapping

from .backend import Array, cache_columns, cholesky_apply, cholesky_solve, chunks, namespace, row_squares
from .distributed import Communicator, Serial
from .dual_solve import (
    SOLVE_METHODS,
    DualSolve,
    DualSolveOptions,
    add_gram,
    dual_objective,
    fit_N_side_chunked,
    solver_array,
)
from .functional import DEFAULT_MEMORY_BUDGET, OBJECTIVES, Fit, second_moment, validate_measure
from .pcg import PreconditionerWarning, gave_up, gram_product, pcg, preconditioner
from .problem import Problem

log = logging.getLogger("mfld")

__all__ = ["SOLVE_METHODS", "DualSolve", "DualSolveOptions", "TwoTimescaleFunctional"]


def feature_arrays(problem: Problem) -> int:
    """How many n x N arrays the problem's features take: 1 where :meth:`FeatureMap.evaluate`'s cache is the values
    themselves (tanh, sigmoid: the derivative is a function of the value), 2 where it keeps the pre-activations
    beside them. Asked of the map on one particle."""
    xp = namespace(problem.Xa)
    cache, H = problem.feature.evaluate(problem.Xa, xp.zeros((1, problem.p), dtype=problem.Xa.dtype))
    return 1 if cache is H else 2


@OBJECTIVES.register(
    "two-timescale",
    doc="the limiting functional, second layer in closed form, docs/theory.md §2",
    options=DualSolveOptions,
)
class TwoTimescaleFunctional:
    """``G(mu) = U(mu) + (lam_w_bar/2) E||w||^2`` with the second layer in closed form."""

    name = "two-timescale"

    def __init__(
        self,
        problem: Problem,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        comm: Communicator | None = None,
        solve: DualSolve | None = None,
        options: DualSolveOptions | None = None,
    ) -> None:
        self.problem = problem
        self.memory_budget = int(memory_budget)
        self.comm: Communicator = Serial() if comm is None else comm
        self.solve = solve if solve is not None else options.dual_solve() if options is not None else DualSolve()
        # Iterative solves carry state from one measure to the next: the preconditioner of each side, the
        # measure it was factored at, and the last solution per (side, columns), the first guess of the next solve.
        self._factor: dict[str, Array] = {}  # the inverse of an earlier K, per side
        self._warned_precision = False
        self._fresh: set[str] = set()  # sides whose preconditioner has not been used yet
        self._fresh_failures = 0  # consecutive failures of a preconditioner on the step after it was made
        self.exact_only = False  # pcg gave up: its preconditioner failed on the step after it was made
        self._source: dict[str, tuple[Array, Array]] = {}  # the (W, q) each factor was formed from
        self._guess: dict[tuple[str, int], Array] = {}  # the last solution: the next first guess
        self.iterations: deque[int] = deque(maxlen=10_000)  # CG iterations of the latest iterative solves
        self.feature_arrays = feature_arrays(problem)

    @property
    def dim(self) -> int:
        """Dimension of the space the measure lives on."""
        return self.problem.p

    @property
    def ridge(self) -> float:
        """``r = n lam_a_bar``, the ridge of the dual system."""
        return self.problem.n * self.problem.lam_a_bar

    def chunk_size(self, rows: int) -> int:
        """Columns per chunk so that a chunk's features (:attr:`feature_arrays` arrays of ``rows`` x chunk) fit the
        memory budget; the temporaries of the passes over a chunk are per cache block (at most
        ``CACHE_BLOCK_BYTES`` each, a few at a time) and come on top."""
        itemsize = self.problem.X.dtype.itemsize
        return max(1, self.memory_budget // (self.feature_arrays * itemsize * max(rows, 1)))

    def features(self, W: Array) -> tuple[Array, Array]:
        """The feature map's cache and values ``(Z, H)`` of points ``W`` on the training inputs."""
        pb = self.problem
        return pb.feature.evaluate(pb.Xa, W)

    # ----------------------------------------------------------------- fit
    def fit(
        self,
        W: Array,
        q: Array,
        features: tuple[Array, Array] | None = None,
        Y: Array | None = None,
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
        side = "n" if N >= n or features is not None or self.comm.size > 1 or signed else "N"
        whole = side == "n" or self.chunk_size(n) >= N  # the N side's n x N features fit the memory budget
        if features is None and not signed and whole and self._iterative(n if side == "n" else N):
            return self._fit_pcg(W, q, Y, side)
        if side == "n":
            return self._fit_n_side(W, q, features, Y, signed)
        return self._fit_N_side(W, q, Y)

    def _forget_solver(self) -> None:
        """Forget the iterative solver's state: the next fit is exact."""
        self._factor.clear()
        self._source.clear()
        self._guess.clear()

    def solver_state(self) -> dict[str, Array]:
        """The iterative solver's state, from which the next fit starts, as named arrays.

        ``source_<side>`` and ``source_weight_<side>`` are the measure ``(W, q)`` whose system the
        preconditioner of that side inverts (the factor itself, n x n, is formed again from them);
        ``guess_<side>_<columns>`` is the last solution, the next first guess. Empty for exact solves.
        The arrays are the solver's own, never changed in place afterwards.
        """
        out: dict[str, Array] = {}
        for side, (W, q) in self._source.items():
            out[f"source_{side}"], out[f"source_weight_{side}"] = W, q
        for (side, columns), guess in self._guess.items():
            out[f"guess_{side}_{columns}"] = guess
        return out

    def restore_solver(self, state: Mapping[str, Array]) -> None:
        """Continue from :meth:`solver_state`: each preconditioner is factored again at its measure, as it was, by
        the first solve that needs it (within the run's BLAS threads, on which its last bits depend).

        Refuses names and shapes that no state of this functional has (a foreign or altered file).
        """
        self._forget_solver()
        pb, xp = self.problem, namespace(self.problem.X)
        guesses: dict[tuple[str, int], Array] = {}
        for name, value in state.items():
            parsed = solver_array(name)
            if parsed is None:
                raise ValueError(f"solver state {name!r} is not part of the {self.name} functional's solver")
            what, side, columns = parsed
            v = xp.asarray(value, dtype=pb.X.dtype)
            if what == "source":
                q = state.get(f"source_weight_{side}")
                if q is None or v.ndim != 2 or v.shape[1] != pb.p or tuple(q.shape) != (v.shape[0],):
                    raise ValueError(
                        f"solver state {name!r}: a measure's points (m x {pb.p}) and their weights "
                        f"(m,) are expected, got {tuple(v.shape)} and "
                        f"{None if q is None else tuple(q.shape)}"
                    )
                self._source[side] = (v, xp.asarray(q, dtype=pb.X.dtype))
            elif what == "guess":
                if v.ndim != 2 or v.shape[1] != columns or (side == "n" and v.shape[0] != pb.n):
                    raise ValueError(
                        f"solver state {name!r} has shape {tuple(v.shape)}, not that of a solution "
                        f"of the {side}-side system with {columns} column(s)"
                    )
                guesses[(side, columns)] = v
        self._guess = guesses

    def _iterative(self, size: int) -> bool:
        if self.exact_only:
            return False
        m = self.solve.method
        return m == "pcg" or (m == "auto" and size >= self.solve.crossover)

    def _exact(self, W: Array, q: Array, Y: Array, side: str, keep: bool = True) -> Fit:
        """The Cholesky fit, whose system becomes the preconditioner of that side (``keep``)."""
        fit = self._fit_n_side(W, q, None, Y) if side == "n" else self._fit_N_side(W, q, Y)
        assert fit.gram is not None and fit.factor is not None  # an exact fit is factored
        if not keep:
            return fit
        xp = namespace(fit.gram)
        self._source[side] = (xp.array(W, copy=True), xp.array(q, copy=True))
        self._factor[side] = self._inverse(fit)
        self._fresh.add(side)
        if side == "n":
            solution = fit.coef
        else:
            assert fit.H is not None  # the N-side fit keeps its features whole
            solution = cholesky_apply(fit.factor, (fit.H * xp.sqrt(q)).T @ Y)
        self._guess[(side, Y.shape[1])] = solution
        return fit

    def _inverse(self, fit: Fit) -> Array:
        """The preconditioner of an exact fit's system: ``(S + r I)^{-1}`` (:func:`~mfld.model.pcg.preconditioner`:
        single precision unless K is beyond it, then double, with one :class:`PreconditionerWarning`)."""
        assert fit.gram is not None  # an exact fit has its Gram matrix
        xp = namespace(fit.gram)
        inverse, message = preconditioner(fit.gram + self.ridge * xp.eye(fit.gram.shape[0], dtype=fit.gram.dtype))
        if message and not self._warned_precision:
            self._warned_precision = True
            warnings.warn(message, PreconditionerWarning, stacklevel=2)
            log.info(message)
        return inverse

    def _fit_pcg(self, W: Array, q: Array, Y: Array, side: str) -> Fit:
        """Matrix-free solve of the dual system on ``side``, falling back to the exact solve to (re)precondition."""
        pb, xp = self.problem, namespace(W)
        if side in self._source and side not in self._factor:  # restored: factored again where it was
            Ws, qs = self._source[side]
            self._factor[side] = self._inverse(
                self._fit_n_side(Ws, qs, None, pb.Y) if side == "n" else self._fit_N_side(Ws, qs, pb.Y)
            )
        factor = self._factor.get(side)
        size = pb.n if side == "n" else W.shape[0]
        if factor is None or factor.shape[0] != size:
            return self._exact(W, q, Y, side)
        r = self.ridge
        guess = self._guess.get((side, Y.shape[1]))
        Z: Array | None = None
        H: Array | None = None
        if side == "n":
            if self.chunk_size(pb.n) >= W.shape[0]:
                Z, H = self.features(W)
            kept = H

            def matvec(V: Array) -> Array:
                if kept is not None:
                    out = gram_product(kept, q, V)
                else:
                    out = xp.zeros_like(V)
                    for sl in chunks(W.shape[0], self.chunk_size(pb.n)):
                        Hc = self.features(W[sl])[1]
                        out += gram_product(Hc, q[sl], V)
                        del Hc  # before the next chunk's features: the budget counts one chunk's arrays
                return self.comm.sum(out) + r * V

            rhs = Y
        else:
            Z, H = self.features(W)
            B = H * xp.sqrt(q)

            def matvec(V: Array) -> Array:
                return B.T @ (B @ V) + r * V

            rhs = B.T @ Y

        def precondition(R: Array) -> Array:
            return (factor @ R.astype(factor.dtype)).astype(R.dtype)

        result = pcg(matvec, rhs, precondition, guess, self.solve.tol, max_iter=4 * self.solve.refresh)
        self.iterations.append(result.iterations)
        fresh = side in self._fresh
        self._fresh.discard(side)
        self._fresh_failures = self._fresh_failures + 1 if fresh and not result.converged else 0
        if self._fresh_failures >= 2:  # twice in a row useless one step after it was made: so at every step
            self._give_up(result.iterations, result.residual)
            return self._exact(W, q, Y, side, keep=False)
        if not result.converged:  # the preconditioner is too far off: solve exactly, which refreshes it
            return self._exact(W, q, Y, side)
        if result.iterations > self.solve.refresh:
            del self._factor[side], self._source[side]  # the preconditioner has drifted: the next solve refreshes it
        self._guess[(side, Y.shape[1])] = result.x
        C = result.x if side == "n" else (Y - B @ result.x) / r
        pred = Y - r * C
        U = dual_objective(pb, Y, C)
        return Fit(W, q, C, pred, U, side, None, None, Z, H)

    def _give_up(self, iterations: int, residual: float) -> None:
        """Solve exactly from now on, with one warning: twice in a row the preconditioner made at the previous step
        missed ``solve_tol`` within pcg's iteration cap, so each step would pay the cap and then the exact solve. (A
        resumed run finds it again; a failed pcg solve is replaced by the exact one: the same trajectory.)"""
        self.exact_only = True
        self._forget_solver()
        warnings.warn(message := gave_up(iterations, residual), PreconditionerWarning, stacklevel=3)
        log.info(message)

    def _fit_n_side(
        self, W: Array, q: Array, features: tuple[Array, Array] | None, Y: Array, signed: bool = False
    ) -> Fit:
        pb, xp = self.problem, namespace(W)
        n = pb.n
        S = xp.zeros((n, n), dtype=pb.X.dtype)
        Z_keep = H = None
        sqrt_q = xp.sqrt(xp.abs(q))  # used only when the weights are not signed
        if features is not None:
            Z_keep, H = features
            add_gram(S, H, q, sqrt_q, signed)
        else:
            size = self.chunk_size(n)
            for part in chunks(W.shape[0], size):
                Z, Hc = self.features(W[part])
                if size >= W.shape[0]:
                    Z_keep, H = Z, Hc
                del Z  # kept above or not needed
                add_gram(S, Hc, q[part], sqrt_q[part], signed)
                del Hc
            S = self.comm.sum(S)
        r = self.ridge
        K = S + r * xp.eye(n, dtype=S.dtype)
        C, L = cholesky_solve(K, Y)
        pred = Y - r * C
        U = dual_objective(pb, Y, C)
        return Fit(W, q, C, pred, U, "n", S, L, Z_keep, H)

    def _fit_N_side(self, W: Array, q: Array, Y: Array) -> Fit:
        pb, xp = self.problem, namespace(W)
        N = W.shape[0]
        sqrt_q = xp.sqrt(q)
        r = self.ridge
        if self.chunk_size(pb.n) < N:  # the features would not fit the budget whole: by chunks of samples
            return fit_N_side_chunked(self.problem, self.memory_budget, self.feature_arrays, self.ridge, W, q, Y)
        Z, H = self.features(W)
        B = H * sqrt_q
        Gm = B.T @ B
        M = Gm + r * xp.eye(N, dtype=Gm.dtype)
        BtY = B.T @ Y
        sol, L = cholesky_solve(M, BtY)
        C = (Y - B @ sol) / r
        pred = Y - r * C
        U = dual_objective(pb, Y, C)
        return Fit(W, q, C, pred, U, "N", Gm, L, Z, H)

    # ------------------------------------------------- first variation, drift
    def blocks(self, fit: Fit, W: Array) -> Iterator[tuple[slice, Array, Array]]:
        """``(slice, Z, H)`` over blocks of ``W``, reusing the fit's features when they are of ``W``.

        The features come in chunks of the memory budget, and each chunk in blocks of
        :func:`~mfld.model.backend.cache_columns` columns: what the caller does with a block (``a = H^T c``, then
        the derivative and its contraction) then reads the block from the cache, not from memory.
        """
        n = self.problem.n
        if W is fit.points and fit.H is not None and fit.Z is not None:
            for sl in chunks(W.shape[0], cache_columns(namespace(W), n, W.shape[0], fit.H.itemsize)):
                yield sl, fit.Z[:, sl], fit.H[:, sl]
            return
        for part in chunks(W.shape[0], self.chunk_size(n)):
            Z, H = self.features(W[part])
            for sl in chunks(H.shape[1], cache_columns(namespace(H), n, H.shape[1], H.itemsize)):
                yield slice(part.start + sl.start, part.start + sl.stop), Z[:, sl], H[:, sl]
            # Freed before the next chunk's features, so that one chunk's arrays are alive at a time (the
            # caller drops its names at the end of its loop body too).
            del Z, H

    def second_layer(self, fit: Fit, W: Array | None = None) -> Array:
        """``a_mu(w) = h(X; w)^T c_mu`` at points ``W`` (N x T; default: the fit's own points)."""
        W = fit.points if W is None else W
        xp = namespace(W)
        out = xp.empty((W.shape[0], self.problem.T), dtype=W.dtype)
        for sl, Z, H in self.blocks(fit, W):
            out[sl] = H.T @ fit.coef
            del Z, H  # views of the chunk: dropped before the next chunk is formed
        return out

    def first_variation_U(self, fit: Fit, W: Array | None = None) -> Array:
        """``dU/dmu(w) = -(lam_a_bar / 2T) ||a_mu(w)||^2`` at points ``W``."""
        a = self.second_layer(fit, W)
        return -0.5 * self.problem.lam_a_bar * row_squares(a) / self.problem.T

    def potential(self, fit: Fit, W: Array | None = None) -> Array:
        """``V_mu(w) = dU/dmu(w) + (lam_w_bar / 2) ||w||^2`` = ``dG/dmu`` at points ``W``."""
        W = fit.points if W is None else W
        return self.first_variation_U(fit, W) + 0.5 * self.problem.lam_w_bar * row_squares(W)

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
            del Z, H
        return out

    # --------------------------------------------------------------- energy
    def energy(self, fit: Fit) -> dict[str, float]:
        """``U``, ``second_moment = E||w||^2`` and ``G = U + (lam_w_bar/2) E||w||^2``."""
        m2 = self.comm.sum(second_moment(fit, fit.points))
        return {"U": fit.U, "second_moment": m2, "G": fit.U + 0.5 * self.problem.lam_w_bar * m2}

    def kernel_fit(self, fit: Fit) -> Fit:
        """The fit whose Gram matrix is the intrinsic kernel ``k_mu``: itself, or the exact solve of an iterative fit.

        It leaves the iterative solver's state as it was: measuring a run does not change it.
        """
        if fit.gram is not None:
            return fit
        if fit.exact is None:
            fit.exact = self._exact(fit.points, fit.weights, self.problem.Y, fit.side, keep=False)
        return fit.exact

    def predict(self, fit: Fit, X: Array) -> Array:
        """``f_mu(x) = sum_i q_i a_mu(w_i) h(x; w_i)`` at new inputs ``X`` (m x T)."""
        pb, W = self.problem, fit.points
        xp = namespace(W)
        Xa = pb.feature.augment(X)
        out = xp.zeros((X.shape[0], pb.T), dtype=W.dtype)
        for sl, Z, H in self.blocks(fit, W):
            a = H.T @ fit.coef
            del Z, H  # views of the chunk: dropped before the next chunk is formed
            Ht = pb.feature.evaluate(Xa, W[sl])[1]
            out += Ht @ (fit.weights[sl, None] * a)
            del Ht
        return self.comm.sum(out)
