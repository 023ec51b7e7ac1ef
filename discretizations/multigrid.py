"""Multigrid for the implicit finite-volume step, by aggregation that keeps the Gibbs density.

The step solves ``(I - dt A) m = r`` with ``A`` the Scharfetter-Gummel operator
(:mod:`~mfld.discretizations.scharfetter_gummel`): face rates ``a_f`` (from cell i to j = i + e_k) and ``b_f``
(back) with ``a_f pi_i = b_f pi_j`` for the Gibbs density ``pi = exp(-V / lam)``, so that ``A`` is self-adjoint
in the inner product ``<x, y> = sum_i x_i y_i / pi_i``.

Coarsening merges the cells in blocks of two per axis (a single cell at the end of an odd axis). Restriction
``R`` sums the mass of a block; prolongation ``P`` spreads a block's mass over its cells in proportion to ``pi``
(``phi_i = pi_i / Pi_J``, ``Pi_J = sum_{i in J} pi_i``). ``R P = I``, and ``P`` is the adjoint of ``R`` in the
weighted inner products (``1 / pi`` on the fine cells, ``1 / Pi`` on the coarse), so the coarse operator
``R A P`` is again a nearest-neighbour generator: across the face between blocks J and K the rates are

    a_JK = sum_f a_f phi_{i(f)},    b_KJ = sum_f b_f phi_{j(f)}

over the fine faces f between them, with zero column sums, non-negative off-diagonal entries and detailed
balance ``a_JK Pi_J = b_KJ Pi_K``: the same structure, on the coarse Gibbs density ``Pi``, level after level.
Block-constant prolongation makes ``R A P`` about twice as stiff as the operator rediscretised on the coarse
cells (in 1-D with constant V: ``lam / (2 h^2)`` against ``lam / (2 h)^2``, and likewise per axis in 2-D and
3-D); the coarse levels use ``COARSE_SCALE R A P``, 0.6 by trial, near the rediscretisation's 0.5.

:class:`VCycle` is one V-cycle with ``smoothing`` damped Jacobi sweeps before and after the coarse correction
and an exact solve on the coarsest level (at most :data:`COARSEST` cells). Every part is self-adjoint in the
weighted inner product and the smoother converges (``omega <= 1``: the grid graph is bipartite, so
``2 D - M`` is similar to ``M``), so the cycle is a symmetric positive-definite preconditioner for conjugate
gradients (:class:`~mfld.discretizations.implicit_solvers.ConjugateGradient`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mfld.model.backend import Array, namespace

from .scharfetter_gummel import GridLike, rates, sparse_modules

COARSEST = 64
"""Cells of the coarsest level, solved exactly (a dense inverse). 512 took the same iterations on 48^2 .. 64^3 and
made small grids slow: its inverse cost 15 ms a step at 48^2, more than the rest of the solve."""

COARSE_SCALE = 0.6
"""The coarse operators are ``COARSE_SCALE R A P`` (module doc): block-constant prolongation doubles the stiffness.
0.6 (with :data:`OMEGA` 0.8 and two sweeps) took the fewest CG iterations of 0.4 .. 1.0 on a 64^3 trial (15, 18 and
7 iterations to 1e-10 at (lam, dt) = (0.05, 0.5), (0.05, 5), (1, 0.01); 20, 30 and 7 with the Galerkin 1.0)."""

OMEGA = 0.8
"""The damping of the Jacobi sweeps (at most 1: module doc)."""


def _pair(x: Array, axis: int, reduce: Callable[..., Array], fill: float) -> Array:
    """``x`` reduced over consecutive pairs along ``axis`` (an odd axis is padded with ``fill``)."""
    xp = namespace(x)
    if x.shape[axis] % 2:
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, 1)
        x = xp.pad(x, pad, constant_values=fill)
    shape = x.shape[:axis] + (x.shape[axis] // 2, 2) + x.shape[axis + 1 :]
    return reduce(x.reshape(shape), axis=axis + 1)


def _spread(x: Array, shape: tuple[int, ...]) -> Array:
    """A block array repeated over the cells of its blocks, cut to the fine ``shape``."""
    xp = namespace(x)
    for k, n in enumerate(shape):
        x = xp.take(xp.repeat(x, 2, axis=k), xp.arange(n), axis=k)
    return x


def _blocks(x: Array, reduce: Callable[..., Array], fill: float, skip: int | None = None) -> Array:
    """``x`` reduced over the blocks of two cells per axis (every axis but ``skip``)."""
    for k in range(x.ndim):
        if k != skip:
            x = _pair(x, k, reduce, fill)
    return x


class Level:
    """``M = I - dt A`` on one level, from its face rates times dt (``dt a``, ``dt b`` per axis)."""

    def __init__(self, face_rates: list[tuple[Array, Array]]) -> None:
        self.rates = face_rates
        self.shape = tuple(a.shape[k] + 1 for k, (a, _) in enumerate(face_rates))
        xp = namespace(face_rates[0][0])
        self.diagonal = xp.ones(self.shape, dtype=face_rates[0][0].dtype)  # 1 + dt (the outflow rate)
        for k, (a, b) in enumerate(face_rates):
            lo, hi = _faces(len(self.shape), k)
            self.diagonal[lo] += a
            self.diagonal[hi] += b
        self._inflow = [xp.empty_like(a) for a, _ in face_rates]  # matvec's scratch, one per axis
        self.step = OMEGA / self.diagonal  # damped Jacobi

    def matvec(self, m: Array) -> Array:
        """``M m``: the diagonal times m, less the inflow across every face."""
        xp = namespace(m)
        m = m.reshape(self.shape)
        out = self.diagonal * m
        for k, (a, b) in enumerate(self.rates):
            lo, hi = _faces(len(self.shape), k)
            inflow = xp.multiply(a, m[lo], out=self._inflow[k])
            # In place through the views: ``out[hi] -= ...`` would copy the view back onto itself.
            xp.subtract(out[hi], inflow, out=out[hi])
            xp.multiply(b, m[hi], out=inflow)
            xp.subtract(out[lo], inflow, out=out[lo])
        return out

    def size(self) -> int:
        return math.prod(self.shape)


def _faces(ndim: int, axis: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The cells below and above the faces of ``axis``, as index tuples."""
    lo = [slice(None)] * ndim
    hi = [slice(None)] * ndim
    lo[axis], hi[axis] = slice(0, -1), slice(1, None)
    return tuple(lo), tuple(hi)


def coarsen(
    face_rates: list[tuple[Array, Array]], V: Array, lam: float
) -> tuple[list[tuple[Array, Array]], Array, Array]:
    """The coarse face rates ``COARSE_SCALE R A P``, the coarse free energy ``-lam log Pi_J`` and the fine weights
    ``phi`` (module doc), from the fine face rates (any common factor, here dt, carries over) and the fine ``V``
    (or free energy)."""
    xp = namespace(V)
    low = _blocks(V, xp.min, float("inf"))
    phi = xp.exp(-(V - _spread(low, V.shape)) / lam)  # within a block: no overflow, the largest is 1
    total = _blocks(phi, xp.sum, 0.0)
    phi = phi / _spread(total, V.shape)
    coarse_V = low - lam * xp.log(total)
    coarse = []
    for k, (a, b) in enumerate(face_rates):
        n = V.shape[k]
        faces = xp.arange(1, n - 1, 2)  # the faces between blocks: between cells 2J + 1 and 2J + 2
        lower, upper = xp.take(phi, faces, axis=k), xp.take(phi, faces + 1, axis=k)
        a_c = _blocks(xp.take(a, faces, axis=k) * lower, xp.sum, 0.0, skip=k)
        b_c = _blocks(xp.take(b, faces, axis=k) * upper, xp.sum, 0.0, skip=k)
        coarse.append((COARSE_SCALE * a_c, COARSE_SCALE * b_c))
    return coarse, coarse_V, phi


class VCycle:
    """One V-cycle for ``(I - dt A(V)) m = r`` (module doc); ``levels`` counts the levels, the finest first."""

    def __init__(self, grid: GridLike, V: Array, lam: float, dt: float, smoothing: int = 2) -> None:
        xp = namespace(V)
        self.smoothing = smoothing
        V = V.reshape(grid.shape)
        face_rates = []
        for k in range(len(grid.shape)):
            a, b = rates(grid, V, lam, k)
            face_rates.append((dt * a, dt * b))
        self.levels = [Level(face_rates)]
        self.weights: list[Array] = []  # phi of level l's cells in their blocks of level l + 1
        while self.levels[-1].size() > COARSEST and max(self.levels[-1].shape) > 2:
            face_rates, V, phi = coarsen(face_rates, V, lam)
            self.levels.append(Level(face_rates))
            self.weights.append(phi)
        coarsest = self.levels[-1]
        self.coarse_inverse = xp.linalg.inv(_dense(coarsest))

    def __call__(self, r: Array) -> Array:
        return self._cycle(0, r)

    def _cycle(self, depth: int, r: Array) -> Array:
        xp = namespace(r)
        level = self.levels[depth]
        if depth == len(self.levels) - 1:
            return (self.coarse_inverse @ r.ravel()).reshape(level.shape)
        x = level.step * r
        for _ in range(self.smoothing - 1):
            _smooth(level, x, r)
        residual = level.matvec(x)
        xp.subtract(r, residual, out=residual)
        correction = self._cycle(depth + 1, _blocks(residual, xp.sum, 0.0))
        x += self.weights[depth] * _spread(correction, level.shape)
        for _ in range(self.smoothing):
            _smooth(level, x, r)
        return x


def _smooth(level: Level, x: Array, r: Array) -> None:
    """One damped Jacobi sweep on ``M x = r``, in place: ``x += omega D^{-1} (r - M x)``."""
    xp = namespace(x)
    t = level.matvec(x)
    xp.subtract(r, t, out=t)
    xp.multiply(t, level.step, out=t)
    xp.add(x, t, out=x)


def _dense(level: Level) -> Any:
    """The dense matrix of ``I - dt A`` on a (small) level, from its face rates."""
    xp = namespace(level.diagonal)
    sp, _ = sparse_modules(xp)
    size = level.size()
    idx = xp.arange(size).reshape(level.shape)
    rows, cols, vals = [xp.arange(size)], [xp.arange(size)], [level.diagonal.ravel()]
    for k, (a, b) in enumerate(level.rates):
        n = level.shape[k]
        lo = xp.take(idx, xp.arange(n - 1), axis=k).ravel()
        hi = xp.take(idx, xp.arange(1, n), axis=k).ravel()
        rows += [hi, lo]
        cols += [lo, hi]
        vals += [-a.ravel(), -b.ravel()]
    matrix = sp.coo_matrix((xp.concatenate(vals), (xp.concatenate(rows), xp.concatenate(cols))), shape=(size, size))
    return matrix.toarray()
