"""How the two-timescale functional solves its dual system ``(S + n lam_a_bar I) c = Y``, and the configuration
keys that choose it (``particles.solve``, ``particles.solve_tol``, ``particles.pcg_refresh``: options of the
objective, :data:`~mfld.model.functional.OBJECTIVES`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .backend import Array, cache_columns, cholesky_solve, chunks, namespace
from .functional import Fit
from .options import choice, option, positive_int
from .problem import Problem

SOLVE_METHODS = ("cholesky", "pcg", "auto")


@dataclass(frozen=True)
class DualSolve:
    """How the dual system ``(S + r I) C = Y`` is solved.

    ``"cholesky"`` forms and factors the Gram matrix every time (exact, the reference);
    ``"pcg"`` solves matrix-free by conjugate gradients (:mod:`mfld.model.pcg`) to the
    relative residual ``tol``, warm-started from the previous solution and preconditioned by
    the inverse (single precision) of an earlier exact solve's matrix, which is refreshed when a
    solve takes more than ``refresh`` iterations. The exact Gram matrices that df and the alignment
    form leave the solver as it was, so that what a run measures does not change its trajectory.
    ``"auto"`` takes pcg when the system solved has at least ``crossover`` rows (measured on two
    cores with benchmarks/particles_cpu.py's trajectories: pcg is 0.65x cholesky at 300 rows on
    the N side, 1.2x at 600, 1.3x at n = 300, 1.7x at n = 500 and 2.3x at n = 1000).
    """

    method: str = "cholesky"
    tol: float = 1e-11
    refresh: int = 10
    crossover: int = 400

    def __post_init__(self) -> None:
        if self.method not in SOLVE_METHODS:
            raise ValueError(f"particles.solve must be one of {SOLVE_METHODS}, got {self.method!r}")
        if not 0 < self.tol < 1:
            raise ValueError(f"particles.solve_tol must lie in (0, 1), got {self.tol}")


@dataclass(frozen=True, kw_only=True)
class DualSolveOptions:
    """The two-timescale objective's keys: how each step's dual system is solved (:class:`DualSolve`)."""

    section: ClassVar[str] = "particles"
    solve: str = choice(
        "auto",
        "the dual system (S + n lam_a_bar I) c = Y of each step: `cholesky` forms and factors "
        "S (exact, the reference), `pcg` solves it matrix-free by conjugate gradients, warm-started "
        "and preconditioned by an earlier factor, `auto` takes pcg when the system solved (n x n, or "
        "N x N when N < n) has at least 400 rows",
        SOLVE_METHODS,
        docs=False,
        since="0.2.0.dev1",
    )
    solve_tol: float = option(
        1e-11,
        "pcg: relative residual per column; the drift then agrees with the exact one to "
        "about cond(K) tol (measured along the paper run: the README's particle-step section)",
        (int, float),
        lambda v: 0 < v < 1,
        "a number in (0, 1)",
        since="0.2.0.dev1",
    )
    pcg_refresh: int = positive_int(
        10, "pcg: refactor the preconditioner after a solve of more iterations than this", since="0.2.0.dev1"
    )

    def dual_solve(self) -> DualSolve:
        """The solver these options choose."""
        return DualSolve(self.solve, self.solve_tol, self.pcg_refresh)


def solver_array(name: str) -> tuple[str, str, int] | None:
    """``(what, side, columns)`` of a name in :meth:`TwoTimescaleFunctional.solver_state`: ``what`` is ``source``,
    ``source_weight`` or ``guess``, ``side`` is ``n`` or ``N``, ``columns`` a guess's (0 for the others); None for
    a name the solver state does not have."""
    for what in ("source_weight", "source"):
        if name in (f"{what}_n", f"{what}_N"):
            return what, name[-1], 0
    part = name.split("_")
    if len(part) == 3 and part[0] == "guess" and part[1] in ("n", "N") and part[2].isdigit():
        return "guess", part[1], int(part[2])
    return None


def solver_axes(name: str) -> tuple[str, ...] | None:
    """The axes of a solver array of :func:`solver_array`'s names: a source's points ``(particle, component)``, its
    weights ``(particle,)``, a guess ``(sample, column)`` on the n side and ``(particle, column)`` on the N side."""
    parsed = solver_array(name)
    if parsed is None:
        return None
    what, side, _ = parsed
    if what == "guess":
        return ("sample" if side == "n" else "particle", "column")
    return ("particle", "component") if what == "source" else ("particle",)


def dual_objective(problem: Problem, Y: Array, C: Array) -> float:
    """``U = (lam_a_bar / 2T) tr(Y^T c)``: the loss at the optimal second layer from the dual coefficients ``c``
    of ``K c = Y`` (docs/theory.md §2)."""
    return 0.5 * problem.lam_a_bar * float(namespace(C).sum(Y * C)) / problem.T


def fit_N_side_chunked(
    problem: Problem, memory_budget: int, feature_arrays: int, ridge: float, W: Array, q: Array, Y: Array
) -> Fit:
    """The N-side solve (``(B^T B + r I) sol = B^T Y``, ``B = h(X; W) diag(sqrt q)``, ``c = (Y - B sol) / r``) with
    the features formed by chunks of samples that fit ``memory_budget`` (``feature_arrays`` n x N arrays a
    feature map keeps): B^T B and B^T Y summed over the chunks, c by a second pass. pcg is not used here (its
    products would form every chunk at every iteration), and the fit keeps no features."""
    pb, xp = problem, namespace(W)
    N = W.shape[0]
    sqrt_q = xp.sqrt(q)
    rows = max(1, memory_budget // (feature_arrays * pb.X.dtype.itemsize * N))
    Gm = xp.zeros((N, N), dtype=pb.X.dtype)
    BtY = xp.zeros((N, Y.shape[1]), dtype=pb.X.dtype)
    for sl in chunks(pb.n, rows):
        B = pb.feature.evaluate(pb.Xa[sl], W)[1] * sqrt_q
        Gm += B.T @ B
        BtY += B.T @ Y[sl]
        del B  # before the next chunk's features: one chunk alive at a time
    sol, L = cholesky_solve(Gm + ridge * xp.eye(N, dtype=Gm.dtype), BtY)
    C = xp.empty_like(Y)
    for sl in chunks(pb.n, rows):
        C[sl] = (Y[sl] - (pb.feature.evaluate(pb.Xa[sl], W)[1] * sqrt_q) @ sol) / ridge
    return Fit(W, q, C, Y - ridge * C, dual_objective(pb, Y, C), "N", Gm, L, None, None)


def add_gram(S: Array, H: Array, q: Array, sqrt_q: Array, signed: bool) -> None:
    """``S += H diag(q) H^T``, block by block: ``B B^T`` with ``B = H diag(sqrt q)`` (a symmetric rank-k update,
    half the multiplications of the general product) unless ``signed``, each block's weighted copy a temporary of
    the cache, not of the whole ``H``.

    S (n x n) is read and written once per block, so a block has at least 2n columns: at n = 4096, blocks of 512
    made the cholesky step 2x slower. Measured on a 96^3 grid (n = 50, two threads): 0.064 s against 0.128 s for
    ``(H * q) @ H.T`` at once (benchmarks/grid_vs_peers.py's problem).
    """
    xp = namespace(H)
    for sl in chunks(H.shape[1], max(cache_columns(xp, H.shape[0], H.shape[1], H.itemsize), 2 * H.shape[0])):
        block = H[:, sl]
        if signed:  # no square root of negative weights: the general product instead of B B^T
            S += (block * q[sl]) @ block.T
        else:
            B = block * sqrt_q[sl]
            S += B @ B.T
            del B
        del block  # a view: it would keep the chunk alive beside the next one
