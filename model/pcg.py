"""Preconditioned conjugate gradients for the dual system of the two-timescale functional.

The second layer solves ``K C = B`` with ``K = S + r I`` symmetric positive definite
(``S = H Q H^T`` on the n side, ``B^T B`` on the N side, docs/theory.md §2). Forming
``S`` costs ``n^2 N`` and factoring it ``n^3 / 3`` every step, although the measure moves
by O(eta) per step. Matrix-free, the product ``K V = H (q * (H^T V)) + r V`` costs
``2 n N`` per column, and the factor of an earlier step's ``K_0`` is a preconditioner
whose quality decays slowly: with the previous step's ``C`` as the first guess, a few
iterations reach round-off.

:func:`pcg` runs the T columns of ``B`` together (one matrix product per iteration,
scalars per column) and stops each column at ``||K x - b|| <= tol ||b||``; the
relative error of the solution is then at most ``cond(K) tol``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .backend import Array, namespace


@dataclass
class PCGResult:
    """The solution, the iterations taken, the largest final relative residual, and whether it reached ``tol``."""

    x: Array
    iterations: int
    residual: float
    converged: bool


def pcg(
    matvec: Callable[[Array], Array],
    b: Array,
    precondition: Callable[[Array], Array],
    x0: Array | None = None,
    tol: float = 1e-11,
    max_iter: int = 200,
) -> PCGResult:
    """Solve ``K x = b`` (columns of ``b`` independently) for symmetric positive-definite ``K``.

    ``matvec(V) = K V`` and ``precondition(R) ~ K^{-1} R`` act on n x T blocks. After
    ``max_iter`` iterations the result says it did not converge; the caller decides.
    """
    xp = namespace(b)
    x = xp.zeros_like(b) if x0 is None else x0.copy()
    r = b - matvec(x) if x0 is not None else b.copy()
    b_norm = xp.sqrt(xp.sum(b * b, axis=0))
    b_norm = xp.where(b_norm > 0, b_norm, 1.0)
    z = precondition(r)
    p = z.copy()
    rz = xp.sum(r * z, axis=0)
    it = 0
    rel = float(xp.max(xp.sqrt(xp.sum(r * r, axis=0)) / b_norm))
    while rel > tol and it < max_iter:
        Kp = matvec(p)
        # Converged columns keep a zero step rather than dividing by a vanishing p^T K p.
        pKp = xp.sum(p * Kp, axis=0)
        alpha = xp.where(pKp > 0, rz / xp.where(pKp > 0, pKp, 1.0), 0.0)
        x += alpha * p
        r -= alpha * Kp
        z = precondition(r)
        rz_new = xp.sum(r * z, axis=0)
        beta = xp.where(rz > 0, rz_new / xp.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta * p
        rz = rz_new
        it += 1
        rel = float(xp.max(xp.sqrt(xp.sum(r * r, axis=0)) / b_norm))
    return PCGResult(x, it, rel, rel <= tol)
