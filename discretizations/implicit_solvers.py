"""The linear system of an implicit finite-volume step, and three ways to solve it.

Every implicit step of :class:`~mfld.discretizations.grid.FiniteVolume` solves

    (I - dt A(V)) m = r,

with ``A(V) = sum_k A_k`` the Scharfetter-Gummel operator
(:mod:`mfld.discretizations.scharfetter_gummel`), one part per axis; each ``I - dt A_k``
is a set of independent tridiagonal M-matrices (one per grid line along axis k) with unit
column sums, and ``A_k exp(-V / lam) = 0`` for every k.

The solvers, registered in :data:`LINEAR_SOLVERS` (``grid.linear_solver``):

* ``"direct"``: sparse LU of ``I - dt A`` (SuperLU; cuSOLVER on CuPy), refactored whenever V
  changes, i.e. every step of the nonlinear problem. Exact; the reference. Its fill-in makes
  it impractical past about 10^5 cells in 2-D and 10^4 in 3-D.
* ``"splitting"``: Lie dimensional splitting, ``m = (I - dt A_p)^{-1} ... (I - dt A_1)^{-1} r``:
  one batch of tridiagonal solves per axis (the Thomas algorithm, vectorised over the lines),
  O(cells) per step. Each factor is an M-matrix with unit column sums, so the step is positive
  (the Thomas recursion only adds non-negative terms: exactly, in floating point) and conserves
  mass, for every ``dt``. Each factor also keeps the Gibbs density ``exp(-V / lam)`` fixed, so the
  stationary states are those of the unsplit scheme. The price is a splitting error of order
  ``dt`` per unit time (commutators ``[A_j, A_k]``), measured in ``tests/discretizations/test_linear.py``; in
  1-D there is one factor and the solve is exact.
* ``"krylov"``: GMRES on the unsplit system, matrix-free, preconditioned by one splitting
  sweep (which is already close: a few iterations reach ``grid.solver_tol``), O(cells) per
  iteration. The result is the direct solution to the tolerance; then mass is restored
  exactly (a rescaling by 1 + O(tol)) and round-off negatives of order tol are set to zero
  (the exact solution is positive), so positivity and mass hold as for the direct solver.
* ``"cg"``: conjugate gradients on the symmetric (Slotboom) form of the same system, preconditioned
  by a multigrid V-cycle (:mod:`mfld.discretizations.multigrid`): iterations nearly independent of
  dt and of the cells; it stops at a proven bound ``tol`` on the relative L1 error of the step
  (:class:`ConjugateGradient`), then restores positivity and mass as ``krylov`` does.

``"auto"`` (:func:`choose`) takes ``direct`` in 1-D and on small grids, where a factorisation is
cheapest, and ``cg`` above the measured crossover (``benchmarks/grid_vs_peers.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from mfld.model.backend import Array, namespace
from mfld.model.registry import Registry

from .multigrid import VCycle
from .scharfetter_gummel import GridLike, apply_rates, fokker_planck_matrix, rates, sparse_modules

AUTO_DIRECT_CELLS = 2048  # measured crossover in 2-D (about 40^2); in 3-D krylov wins from 16^3 = 4096


def thomas_factors(a: Array, b: Array, dt: float) -> tuple[Array, Array, Array]:
    """The elimination of ``I - dt A_1d`` on every line at once (lines along axis 0, ``n x lines``).

    ``a[f], b[f]`` (``(n - 1) x lines``) are the rates across face f, from cell f to f + 1 and back;
    row i reads ``(1 + dt (a_i + b_{i-1})) x_i - dt b_i x_{i+1} - dt a_{i-1} x_{i-1} = r_i``. Returns the
    reciprocal pivots, the eliminated upper diagonal and the lower diagonal for :func:`thomas_solve`.
    An M-matrix with unit column sums: the pivots are positive and no pivoting is needed.
    """
    xp = namespace(a)
    n = a.shape[0] + 1
    diag = xp.ones((n,) + a.shape[1:], dtype=a.dtype)
    diag[:-1] += dt * a
    diag[1:] += dt * b
    upper, lower = -dt * b, -dt * a  # row i: x_{i+1} coefficient upper[i]; row i + 1: x_i coefficient lower[i]
    inv = xp.empty_like(diag)
    c = xp.empty_like(a)
    inv[0] = 1.0 / diag[0]
    c[0] = upper[0] * inv[0]
    for i in range(1, n):
        inv[i] = 1.0 / (diag[i] - lower[i - 1] * c[i - 1])
        if i < n - 1:
            c[i] = upper[i] * inv[i]
    return inv, c, lower


def thomas_solve(factors: tuple[Array, Array, Array], r: Array) -> Array:
    """Forward and back substitution with :func:`thomas_factors`. For ``r >= 0`` every term added is
    non-negative (``-lower``, ``-c`` and the pivots are), so the solution is, in floating point too."""
    inv, c, lower = factors
    x = namespace(r).empty_like(r)
    x[0] = r[0] * inv[0]
    for i in range(1, r.shape[0]):
        x[i] = (r[i] - lower[i - 1] * x[i - 1]) * inv[i]
    for i in range(r.shape[0] - 2, -1, -1):
        x[i] -= c[i] * x[i + 1]
    return x


class SplitSystem:
    """``I - dt A(V)`` of one step: the face rates of every axis and the Thomas factors of every
    ``I - dt A_k``, computed once, for matrix-free products and splitting sweeps."""

    def __init__(self, grid: GridLike, V: Array, lam: float, dt: float) -> None:
        self.shape, self.dt = tuple(grid.shape), dt
        self.rates = [rates(grid, V, lam, k) for k in range(len(self.shape))]
        self.factors = [thomas_factors(_lines(a, k), _lines(b, k), dt) for k, (a, b) in enumerate(self.rates)]

    def matvec(self, m: Array) -> Array:
        """``(I - dt A) m``."""
        m = m.reshape(self.shape)
        return m - self.dt * apply_rates(self.rates, m)

    def sweep(self, r: Array) -> Array:
        """``(I - dt A_p)^{-1} ... (I - dt A_1)^{-1} r``: one sweep of tridiagonal solves per axis."""
        xp = namespace(r)
        m = r.reshape(self.shape)
        for k, factors in enumerate(self.factors):
            x = thomas_solve(factors, _lines(m, k))
            rest = tuple(s for j, s in enumerate(self.shape) if j != k)
            m = xp.moveaxis(x.reshape((self.shape[k],) + rest), 0, k)
        return xp.ascontiguousarray(m)


def split_solve(grid: GridLike, V: Array, lam: float, dt: float, r: Array) -> Array:
    """``(I - dt A_p)^{-1} ... (I - dt A_1)^{-1} r`` (see :class:`SplitSystem`)."""
    return SplitSystem(grid, V, lam, dt).sweep(r)


def _lines(u: Array, axis: int) -> Array:
    """``u`` with ``axis`` first and the others flattened, contiguous: the grid lines along ``axis`` as columns."""
    xp = namespace(u)
    return xp.ascontiguousarray(xp.moveaxis(u, axis, 0)).reshape(u.shape[axis], -1)


class LinearSolver(Protocol):
    """Solves ``(I - dt A(V)) m = r`` for a finite-volume step; ``iterations`` counts Krylov steps (0 if none)."""

    iterations: int

    def solve(self, V: Array, dt: float, r: Array) -> Array: ...


class Direct:
    """Sparse LU of ``I - dt A(V)``, kept while V and dt are unchanged (the linear problems)."""

    def __init__(self, grid: GridLike, lam: float, tol: float) -> None:
        self.grid, self.lam, self.iterations = grid, lam, 0
        self._cached: tuple[float, Array, Callable[[Array], Array]] | None = None

    def solve(self, V: Array, dt: float, r: Array) -> Array:
        xp = namespace(V)
        cached = self._cached
        if cached is None or cached[0] != dt or not bool(xp.array_equal(cached[1], V)):
            sp, spla = sparse_modules(xp)
            M = sp.identity(self.grid.size, format="csc", dtype=V.dtype) - dt * fokker_planck_matrix(
                self.grid, V, self.lam
            )
            cached = self._cached = (dt, V, spla.factorized(M))
        return cached[2](r.ravel()).reshape(self.grid.shape)


class Splitting:
    """Lie dimensional splitting: O(cells), positive, conservative; first-order splitting error (module doc)."""

    def __init__(self, grid: GridLike, lam: float, tol: float) -> None:
        self.grid, self.lam, self.iterations = grid, lam, 0

    def solve(self, V: Array, dt: float, r: Array) -> Array:
        return split_solve(self.grid, V, self.lam, dt, r)


def _gmres_tolerance(gmres: Callable[..., Any], tol: float) -> dict[str, float]:
    """SciPy's GMRES takes ``rtol``; CuPy's (and older SciPy's) ``tol``."""
    names = inspect.signature(gmres).parameters
    return {"rtol": tol} if "rtol" in names else {"tol": tol}


class Krylov:
    """GMRES on ``I - dt A(V)``, matrix-free, preconditioned by a splitting sweep, to relative residual ``tol``."""

    def __init__(self, grid: GridLike, lam: float, tol: float, max_iterations: int = 200) -> None:
        self.grid, self.lam, self.tol, self.max_iterations = grid, lam, float(tol), max_iterations
        self.iterations = 0

    def solve(self, V: Array, dt: float, r: Array) -> Array:
        xp = namespace(r)
        _, spla = sparse_modules(xp)
        size = self.grid.size
        system = SplitSystem(self.grid, V, self.lam, dt)
        op = spla.LinearOperator((size, size), dtype=r.dtype, matvec=lambda m: system.matvec(m).ravel())
        pre = spla.LinearOperator((size, size), dtype=r.dtype, matvec=lambda u: system.sweep(u).ravel())
        count = [0]

        def counted(_: Any) -> None:
            count[0] += 1

        rhs = r.ravel()
        x, info = spla.gmres(
            op,
            rhs,
            x0=pre.matvec(rhs),
            M=pre,
            restart=30,
            maxiter=self.max_iterations,
            atol=0.0,
            callback=counted,
            callback_type="pr_norm",
            **_gmres_tolerance(spla.gmres, self.tol),
        )
        self.iterations = count[0]
        if info != 0:
            raise FloatingPointError(
                f"grid.linear_solver = 'krylov' did not reach grid.solver_tol = {self.tol:g} in {count[0]} GMRES "
                "iterations; reduce time.eta, or use grid.linear_solver = 'direct'"
            )
        x = xp.maximum(x, 0.0) if bool(xp.all(rhs >= 0)) else x  # the exact solution is positive then
        return (x * (xp.sum(rhs) / xp.sum(x))).reshape(self.grid.shape)  # mass exactly that of r


WEIGHT_RANGE = 1300.0
"""The largest ``(max V - min V) / lam`` for which :class:`ConjugateGradient` forms its weights: ``exp(+-650)``
times densities, and their products, stay within double precision (``exp(709)``)."""


class ConjugateGradient:
    """Conjugate gradients on ``(I - dt A(V)) m = r`` in the Slotboom symmetrisation, preconditioned by multigrid.

    With ``g = exp(-V / (2 lam))`` per cell, ``G^{-1} A G`` is symmetric negative semi-definite: across a face its
    off-diagonal entry is ``(lam / h^2) (delta / 2) / sinh(delta / 2)`` (``= sqrt(a b)``), bounded for any lam.
    So ``I - dt A`` is self-adjoint and positive definite in the inner product
    ``<x, y> = sum_i x_i y_i exp((V_i - c) / lam)``, and CG in that inner product is CG on the symmetric system
    in ``u = G^{-1} m``, run here on ``m`` itself: the shift ``c`` (the middle of V's range) keeps the weights
    finite where ``exp(V / lam)`` alone overflows. The preconditioner is one V-cycle of
    :mod:`~mfld.discretizations.multigrid` (self-adjoint and positive definite in the same inner product), which
    keeps the iterations nearly independent of dt and of the cells.

    Stopping rule, in the density's own norm: ``I - dt A`` is an M-matrix with unit column sums, so its inverse is
    non-negative with unit column sums and ``||m - m*||_1 <= ||(I - dt A) m - r||_1``. The iteration stops when
    that residual, recomputed from m at the end, is at most ``tol ||r||_1``: the step's relative L1 error is then
    at most ``tol``. Negative values whose sum is within that bound (always the case where ``r >= 0``, whose exact
    solution is positive) are set to zero and the mass restored; larger ones are left for the time scheme to
    see (BDF2's positivity check). A potential whose range exceeds :data:`WEIGHT_RANGE` ``lam`` is solved by
    ``krylov`` instead (counted in ``fallbacks``).

    On a GPU a solve reads :attr:`HOST_READS` scalars from the device, :attr:`HOST_READS_PER_ITERATION` more per
    iteration and two more per restart after the first (``restarts``, from the true residual).
    """

    HOST_READS = 6  # V's range (two), ||r||_1, the first residual's norm, the first restart's <r, z>, the negatives
    HOST_READS_PER_ITERATION = 3  # <d, M d>, the residual's norm, <r, z>

    def __init__(self, grid: GridLike, lam: float, tol: float, max_iterations: int = 200) -> None:
        self.grid, self.lam, self.tol, self.max_iterations = grid, lam, float(tol), max_iterations
        self.iterations = self.fallbacks = self.restarts = 0
        self.fallback = Krylov(grid, lam, tol, max_iterations)

    def solve(self, V: Array, dt: float, r: Array) -> Array:
        xp = namespace(r)
        low, high = float(xp.min(V)), float(xp.max(V))
        if (high - low) / self.lam > WEIGHT_RANGE:
            self.fallbacks += 1
            out = self.fallback.solve(V, dt, r)
            self.iterations = self.fallback.iterations
            return out
        weight = xp.exp((V.reshape(self.grid.shape) - 0.5 * (low + high)) / self.lam)
        cycle = VCycle(self.grid, V, self.lam, dt)
        M = cycle.levels[0].matvec
        b = r.reshape(self.grid.shape)
        goal = self.tol * float(xp.sum(xp.abs(b)))
        x = cycle(b)
        residual = b - M(x)
        iterations = restarts = 0
        while float(xp.sum(xp.abs(residual))) > goal:
            if iterations >= self.max_iterations:
                raise FloatingPointError(
                    f"grid.linear_solver = 'cg' did not reach grid.solver_tol = {self.tol:g} in {iterations} "
                    "iterations; reduce time.eta, or use grid.linear_solver = 'direct'"
                )
            # A (re)start from the true residual: the recurrence's residual drifts from it in round-off.
            restarts += 1
            z = cycle(residual)
            direction, rz = z, float(xp.sum(weight * residual * z))
            while rz > 0 and iterations < self.max_iterations:
                iterations += 1
                q = M(direction)
                alpha = rz / float(xp.sum(weight * direction * q))
                x += alpha * direction
                residual -= alpha * q
                if float(xp.sum(xp.abs(residual))) <= goal:
                    break
                z = cycle(residual)
                rz, previous = float(xp.sum(weight * residual * z)), rz
                direction *= rz / previous
                direction += z
            residual = b - M(x)
        self.iterations, self.restarts = iterations, restarts
        # Negative values within the error bound are the solve's, not the scheme's: below it they cannot be told
        # from zero (and where r >= 0 the exact solution is positive, so they are at most the L1 error).
        if float(xp.sum(xp.maximum(-x, 0.0))) <= goal:
            x = xp.maximum(x, 0.0)
        return x * (xp.sum(b) / xp.sum(x))  # mass exactly that of r


LINEAR_SOLVERS: Registry[Callable[[GridLike, float, float], LinearSolver]] = Registry(
    "grid.linear_solver", group="mfld.linear_solvers", builtins="mfld.discretizations"
)
LINEAR_SOLVERS.add("direct", Direct, "sparse LU every step: exact, the reference; slow past ~10^5 cells")
LINEAR_SOLVERS.add(
    "splitting",
    Splitting,
    "dimensional (Lie) splitting, tridiagonal sweeps: O(cells), positive and "
    "conservative, splitting error of order eta (none in 1-D)",
)
LINEAR_SOLVERS.add(
    "krylov",
    Krylov,
    "GMRES preconditioned by a splitting sweep, to grid.solver_tol: O(cells) per "
    "iteration, the direct solution to the tolerance",
)
LINEAR_SOLVERS.add(
    "cg",
    ConjugateGradient,
    "conjugate gradients on the symmetric (Slotboom) form, preconditioned by a multigrid "
    "V-cycle; stops at a relative L1 error bound of grid.solver_tol",
)


def choose(name: str, cells: Sequence[int]) -> str:
    """The solver ``name`` stands for on a grid of ``cells`` per axis: itself, or what ``"auto"`` starts with.

    ``auto``: ``direct`` in 1-D (a tridiagonal LU, no fill-in) and up to :data:`AUTO_DIRECT_CELLS`
    cells, ``cg`` above; both give the exact step (cg to its tolerance), so ``auto`` never changes a result beyond
    the tolerance. ``splitting`` is never chosen for the user, with adaptive steps neither, though these bound
    its splitting error with the time error (Lie splitting of implicit Euler is one first-order method; order 2
    in time.tol, tests/discretizations/test_adaptive.py): on transients it reaches the error of adaptive cg in
    1.5x to 4.7x less time (docs/measurements/grid_work_precision.txt, 24 pairs), but near mu* its error follows
    the grid's commutators, not the slow rate, and holds the steps there: on benchmarks/adaptive_steps.py's
    issue-40 case (lam = 0.01, 64^2 cells, to the gap 1e-10, time.tol 0.04) it took 3951 steps and 46.4 s where
    cg took 748 steps and 12.4 s (grid-2d: 60 steps, 0.45 s, against 69, 1.11 s; the timescales experiment's
    96 x 48 grid at r = 64: 310 steps, 1.0 s, against 415, 4.3 s). A per-attempt choice was tried: take the
    sweeps where ``||M s - m||_1`` (M = I - h A, s the sweeps' step; it bounds ``||s - M^{-1} m||_1``) is within
    c time.tol ``||s - m||_1``. With c = 1 it chose right on grid-2d and issue-40 but alternated on the timescales
    grid (5.3 s, slower than cg); with c = 3 it swept all through issue-40 (3951 steps): the bound is measured at
    the step the controller proposes, and steps held small by the splitting keep it small. Not adopted.

    cg over krylov (benchmarks/grid_vs_peers.py, grid_work_precision.py): 1.2x faster per step at 256^2, 64^3 and
    128^3 near equilibrium (0.94x at 512^2), 10x to 36x on stiff steps where krylov stalls or fails; 1.3x to 1.7x
    slower on 20^3 and 28^3 grids near equilibrium, where one splitting sweep already preconditions GMRES well.
    """
    LINEAR_SOLVERS[name]  # refuse an unknown name, listing the known ones
    if name != "auto":
        return name
    total = 1
    for c in cells:
        total *= c
    return "direct" if len(cells) == 1 or total <= AUTO_DIRECT_CELLS else "cg"


class Auto:
    """:func:`choose`'s solver, except that a potential seen twice in a row is factored once and reused.

    A linear problem (V independent of m: Ornstein-Uhlenbeck, a frozen potential) then costs one
    LU and a triangular solve per step, as with ``direct``; a nonlinear one never repeats V.
    Grids whose LU would not fit (over :data:`AUTO_FACTOR_CELLS`) stay with cg. On a GPU a changing potential
    is solved by cg whatever the grid: CuPy factors a sparse matrix on the CPU (``factorized`` is SciPy's LU
    on a host copy), which every step of a nonlinear problem would repeat (tests/discretizations/test_fake_cupy.py
    counts the copy).
    """

    def __init__(self, grid: GridLike, lam: float, tol: float) -> None:
        self.name = choose("auto", grid.shape)
        self.first = LINEAR_SOLVERS[self.name](grid, lam, tol)
        self._args = (grid, lam, tol)
        limit = AUTO_FACTOR_CELLS[min(len(grid.shape), 3) - 1]
        self.direct = Direct(grid, lam, tol) if self.name != "direct" and grid.size <= limit else None
        self._last: tuple[float, Array] | None = None
        self.iterations = 0

    def solve(self, V: Array, dt: float, r: Array) -> Array:
        xp = namespace(V)
        if xp is not np and self.name == "direct":  # the LU would be made on the host at every new V
            self.name, self.first = "cg", ConjugateGradient(*self._args)
            self.direct = Direct(*self._args)
        last, self._last = self._last, (dt, V)
        repeated = last is not None and last[0] == dt and bool(xp.array_equal(last[1], V))
        solver = self.direct if repeated and self.direct is not None else self.first
        out = solver.solve(V, dt, r)
        self.iterations = solver.iterations
        return out


AUTO_FACTOR_CELLS = (10**7, 2**18, 2**15)  # 1-D, 2-D, 3-D: an LU of at most a few hundred MB and seconds


LINEAR_SOLVERS.add(
    "auto",
    Auto,
    f"`direct` in 1-D and up to {AUTO_DIRECT_CELLS} cells, `cg` above (the measured "
    "crossover); a potential that repeats (a linear problem) is factored once and reused",
)
