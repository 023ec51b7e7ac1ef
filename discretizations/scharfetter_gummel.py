"""The Scharfetter-Gummel operator of the finite volumes (docs/theory.md §3).

The finite-volume Fokker-Planck equation is ``dm/dt = A(V) m``: on the face between cells ``i``
and ``i + e_k``, with ``delta = (V_{i+e_k} - V_i) / lam`` and ``B(x) = x / (e^x - 1)``, mass moves
from ``i`` to ``i + e_k`` at the rate ``a = lam B(delta) / h_k^2`` and back at
``b = lam B(-delta) / h_k^2``. So ``A = sum_k A_k``, one operator per axis, with non-negative
off-diagonal entries, zero column sums and ``A_k exp(-V / lam) = 0`` for every k. Its implicit
steps are solved by :mod:`mfld.discretizations.implicit_solvers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from mfld.model.backend import Array, namespace


class GridLike(Protocol):
    """What the operator needs of a grid (read-only: :class:`~mfld.discretizations.mesh.Grid`'s properties)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def size(self) -> int: ...

    @property
    def spacing(self) -> tuple[float, ...]: ...


@dataclass(frozen=True)
class Mobile:
    """A grid with a constant mobility ``D_k`` per axis, as the operator sees it.

    A mobility multiplies every rate along axis k by ``D_k`` (``d_t m = div(D (lam grad m + m grad V))``,
    THEORY.md §7); the rates depend on the spacing only through ``lam / h_k^2``, so the operator with mobility
    is the plain operator of the spacing ``h_k / sqrt(D_k)``. Positivity, mass and the Gibbs equilibrium
    ``exp(-V / lam)`` of every ``A_k`` are kept: ``D_k > 0`` scales each axis's M-matrix.
    """

    grid: GridLike
    mobility: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.grid.shape)

    @property
    def size(self) -> int:
        return self.grid.size

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(h / math.sqrt(d) for h, d in zip(self.grid.spacing, self.mobility, strict=True))


def bernoulli(x: Array) -> Array:
    """``B(x) = x / (e^x - 1)``, with ``B(0) = 1``, no cancellation near 0, and 0 past ``x = 700`` (where ``B``
    is below 1e-301 and ``e^x`` would overflow)."""
    xp = namespace(x)
    small = xp.abs(x) < 1e-8
    safe = xp.where(small, 1.0, xp.minimum(x, 700.0))
    return xp.where(small, 1.0 - 0.5 * x, xp.where(x > 700.0, 0.0, safe / xp.expm1(safe)))


def sparse_modules(xp: ModuleType) -> tuple[ModuleType, ModuleType]:
    """The sparse-matrix and sparse-solver modules of the array namespace ``xp``: SciPy's, or CuPy's."""
    if xp is np:
        import scipy.sparse as sp
        import scipy.sparse.linalg as spla
    else:  # pragma: no cover - GPU only
        import cupyx.scipy.sparse as sp
        import cupyx.scipy.sparse.linalg as spla
    return sp, spla


def rates(grid: GridLike, V: Array, lam: float, axis: int) -> tuple[Array, Array]:
    """The face rates ``(a, b)`` along ``axis``: ``i -> i + e_k`` and back; ``n_k - 1`` faces on that axis."""
    xp = namespace(V)
    delta = xp.diff(V.reshape(grid.shape), axis=axis) / lam
    scale = lam / grid.spacing[axis] ** 2
    return scale * bernoulli(delta), scale * bernoulli(-delta)


def apply_rates(face_rates: list[tuple[Array, Array]], m: Array) -> Array:
    """``sum_k`` (inflow - outflow) across the faces of axis k, given each axis's face rates ``(a, b)``."""
    xp = namespace(m)
    out = xp.zeros_like(m)
    for k, (a, b) in enumerate(face_rates):
        lo = [slice(None)] * m.ndim
        hi = [slice(None)] * m.ndim
        lo[k], hi[k] = slice(0, -1), slice(1, None)
        flux = a * m[tuple(lo)] - b * m[tuple(hi)]  # net flow from i to i + e_k
        out[tuple(lo)] -= flux
        out[tuple(hi)] += flux
    return out


def fokker_planck_matrix(grid: GridLike, V: Array, lam: float) -> Any:  # a scipy or cupyx sparse matrix
    """Sparse ``A(V)`` (CSC) with ``dm/dt = A m``, the Scharfetter-Gummel operator of the module doc."""
    xp = namespace(V)
    sp, _ = sparse_modules(xp)
    idx = xp.arange(grid.size).reshape(grid.shape)
    rows, cols, vals = [], [], []
    for k in range(len(grid.shape)):
        n = grid.shape[k]
        lo = xp.take(idx, xp.arange(n - 1), axis=k).ravel()
        hi = xp.take(idx, xp.arange(1, n), axis=k).ravel()
        a, b = (r.ravel() for r in rates(grid, V, lam, k))
        rows += [lo, lo, hi, hi]
        cols += [lo, hi, lo, hi]
        vals += [-a, b, a, -b]
    A = sp.coo_matrix((xp.concatenate(vals), (xp.concatenate(rows), xp.concatenate(cols))), shape=(grid.size,) * 2)
    return A.tocsc()
