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

from .backend import Array, cache_columns, chunks, namespace


def gram_product(H: Array, q: Array, V: Array) -> Array:
    """``H (q * (H^T V))``, block by block of :func:`~mfld.model.backend.cache_columns` columns: each block's
    second product reads it from the cache, so that the n x N features are read from memory once, not twice."""
    xp = namespace(H, V)
    out = xp.zeros((H.shape[0], V.shape[1]), dtype=xp.result_type(H, V))
    for sl in chunks(H.shape[1], cache_columns(xp, H.shape[0], H.shape[1], H.itemsize)):
        block = H[:, sl]
        out += block @ (q[sl, None] * (block.T @ V))
    return out


def gave_up(iterations: int, residual: float) -> str:
    """What pcg says when it gives way to the exact solve for the rest of a run."""
    return (
        f"pcg: the preconditioner made one step earlier left a relative residual of {residual:.2g} after "
        f"{iterations} iterations (K too ill-conditioned for it to survive a step); the dual system is solved "
        "exactly (cholesky) for the rest of the run, as particles.solve = 'cholesky' would"
    )


PROBE_LIMIT = 0.01
"""The largest relative error of the single-precision preconditioner on its probe (``||v - inv32(K) K v|| / ||v||``)
before it is formed in double precision instead."""


class PreconditionerWarning(RuntimeWarning):
    """pcg changed course: its preconditioner is formed in double precision (its matrix is beyond single precision),
    or pcg gave way to the exact solve (its preconditioner did not survive one step)."""


def preconditioner(K: Array) -> tuple[Array, str]:
    """``K^{-1}`` as pcg's preconditioner, in single precision, and "" (or, where K is beyond single precision, in
    double precision, and the message saying so).

    The explicit inverse costs one more n^3 and makes each application one matrix product, where two triangular
    solves per CG iteration cost as much as the product with K itself. Single precision halves the bytes each
    application reads: the preconditioner only approximates the current ``K^{-1}`` (it inverts an earlier step's
    K), and what pcg's answer is accurate to is its residual, computed in double precision with the current K.
    Past cond(K) ~ 1e7 a single-precision inverse is no longer an approximate inverse (measured:
    ``||I - inv32(K) K|| = 0.19`` at cond 7e6, 0.57 at 8e7), so it is probed on a fixed vector v: where
    ``||v - inv32(K) K v|| / ||v||`` exceeds :data:`PROBE_LIMIT` the inverse is formed in double precision. The
    probe depends only on K, so a resumed run, which factors again at the saved measure, chooses as the run did.
    """
    xp = namespace(K)
    n = K.shape[0]
    single = xp.linalg.inv(K.astype(xp.float32))
    v = xp.sin(xp.arange(1, n + 1, dtype=K.dtype) ** 2)  # a fixed vector with all frequencies, made on the device
    error = float(xp.linalg.norm(v - single.astype(K.dtype) @ (K @ v)) / xp.linalg.norm(v))
    if error <= PROBE_LIMIT:
        return single, ""
    message = (
        f"pcg: K ({n} x {n}) is beyond single precision (||v - inv32(K) K v|| / ||v|| = {error:.2g} on a probe); "
        "its preconditioner is formed in double precision from now on, which doubles the memory traffic of each "
        "iteration (particles.solve = 'cholesky' avoids pcg)"
    )
    return xp.linalg.inv(K), message


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
