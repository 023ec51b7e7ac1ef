"""Finite volumes for the mean-field Fokker-Planck equation (docs/theory.md §3).

    d_t m = lam Laplace(m) + div(m grad V_m)      on a box, no-flux boundaries

Cell-centred tensor grid, Scharfetter-Gummel (exponentially fitted) fluxes. On
the face between cells ``i`` and ``i + e_k`` with ``delta = (V_{i+e_k} - V_i) / lam``
and the Bernoulli function ``B(x) = x / (e^x - 1)``,

    J = (lam / h_k) [B(delta) m_i - B(-delta) m_{i+e_k}]

which vanishes exactly when ``m_{i+e_k} / m_i = exp(-delta)``: the discrete
equilibrium of a frozen potential is exactly proportional to ``exp(-V / lam)``.
Writing ``dm/dt = A(V) m``, A has non-negative off-diagonal entries and zero
column sums, so ``I - eta A`` is an M-matrix with ``1^T (I - eta A) = 1^T``.

Time steps are linearly implicit: V is frozen at the current density (the
functional evaluated on the cell centres weighted by ``m |cell|``) and one sparse
system is solved, by one of the solvers of :mod:`mfld.discretizations.linear`
(``grid.linear_solver``: direct LU, dimensional splitting, or Krylov).

The schemes are registered in :data:`GRID_SCHEMES`:

* ``"implicit-euler"``: ``(I - eta A(V^k)) m^{k+1} = m^k``. Mass is conserved to
  round-off and ``m^{k+1} >= 0`` for every ``eta``; first order in time.
* ``"bdf2"``: ``(I - (2/3) eta A(2 V^k - V^{k-1})) m^{k+1} = (4/3) m^k - (1/3) m^{k-1}``.
  Second order and mass conserving, but *not* unconditionally positive: no
  linear method of order above one is (Bolley & Crouzeix 1978), so the right-hand
  side can go negative for large steps. The minimum density is reported as an
  observable, and a negative density raises an error that says to reduce eta.

The feature matrix ``h(X; cell centres)`` never changes and is computed once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mfld.model.backend import Array, namespace, to_host
from mfld.model.functional import Fit, Functional
from mfld.model.registry import Registry

from .linear import LINEAR_SOLVERS
from .state import DensityState


class BoxWarning(UserWarning):
    """Mass is reaching the outer cells of the box: the box is too small."""


@dataclass(frozen=True)
class Grid:
    """A cell-centred tensor grid on ``prod_k [lower_k, upper_k]`` with ``cells[k]`` cells per axis."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    cells: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.lower) == len(self.upper) == len(self.cells)) or not 1 <= len(self.cells) <= 3:
            raise ValueError(
                f"grid bounds and cells must have one entry per axis (1 to 3 axes), got lower={self.lower}, "
                f"upper={self.upper}, cells={self.cells}"
            )
        for k, (lo, hi, n) in enumerate(zip(self.lower, self.upper, self.cells, strict=True)):
            if not hi > lo:
                raise ValueError(f"grid axis {k}: upper bound {hi} must exceed lower bound {lo}")
            if n < 3:
                raise ValueError(f"grid axis {k}: at least 3 cells are needed, got {n}")

    @classmethod
    def box(cls, half_width: float | list[float], cells: int | list[int], dim: int) -> Grid:
        """The box ``[-L, L]^dim`` (``L`` scalar or per axis) with ``cells`` per axis."""
        widths = half_width if isinstance(half_width, list | tuple | np.ndarray) else [half_width] * dim
        L = [float(v) for v in widths]
        n = [int(v) for v in (cells if isinstance(cells, list | tuple | np.ndarray) else [cells] * dim)]
        if len(L) != dim or len(n) != dim:
            raise ValueError(f"grid.half_width and grid.cells need {dim} entries (one per parameter axis)")
        return cls(tuple(-v for v in L), tuple(L), tuple(n))

    @property
    def dim(self) -> int:
        return len(self.cells)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.cells)

    @property
    def size(self) -> int:
        return math.prod(self.cells)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple((hi - lo) / n for lo, hi, n in zip(self.lower, self.upper, self.cells, strict=True))

    @property
    def cell_volume(self) -> float:
        return math.prod(self.spacing)

    def axes(self) -> list[np.ndarray]:
        """Cell-centre coordinates along each axis."""
        return [lo + (np.arange(n) + 0.5) * h for lo, n, h in zip(self.lower, self.cells, self.spacing, strict=True)]

    def centers(self) -> np.ndarray:
        """All cell centres, ``size x dim``, in C order of ``shape``."""
        mesh = np.meshgrid(*self.axes(), indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    def edge_mask(self) -> np.ndarray:
        """Boolean mask of the outermost layer of cells."""
        mask = np.zeros(self.shape, dtype=bool)
        for k in range(self.dim):
            idx: list[slice | int] = [slice(None)] * self.dim
            idx[k] = 0
            mask[tuple(idx)] = True
            idx[k] = -1
            mask[tuple(idx)] = True
        return mask


def check_box(grid: Grid, prior_sd: Sequence[float], outside_tol: float = 1e-3, min_cells_per_sd: float = 2.0) -> None:
    """Refuse a box that cannot hold the prior (the initial measure), a centred Gaussian.

    ``prior_sd`` gives its standard deviation per axis (``1 / sqrt(lam_w)`` for
    ``w``). The prior's mass outside the box must be below ``outside_tol`` and
    each axis must resolve its standard deviation with ``min_cells_per_sd`` cells.
    """
    inside = 1.0
    for lo, hi, sd in zip(grid.lower, grid.upper, prior_sd, strict=True):
        inside *= 0.5 * (math.erf(hi / (sd * math.sqrt(2))) - math.erf(lo / (sd * math.sqrt(2))))
    if 1.0 - inside > outside_tol:
        need = max(prior_sd) * math.sqrt(2) * _erfinv_upper(outside_tol / (2 * grid.dim))
        raise ValueError(
            f"the grid box cannot hold the prior (sd {max(prior_sd):.3g}): {1 - inside:.2e} of its mass lies "
            f"outside; use grid.half_width >= {need:.3g}"
        )
    for k, (h, sd) in enumerate(zip(grid.spacing, prior_sd, strict=True)):
        if h * min_cells_per_sd > sd:
            raise ValueError(
                f"grid axis {k} is too coarse for the prior (sd {sd:.3g}, cell width {h:.3g}); "
                f"use grid.cells >= {math.ceil((grid.upper[k] - grid.lower[k]) * min_cells_per_sd / sd)}"
            )


def _erfinv_upper(tail: float) -> float:
    from scipy.special import erfcinv

    return float(erfcinv(2 * tail))


def gaussian_density(grid: Grid, mean: npt.ArrayLike, cov: npt.ArrayLike) -> np.ndarray:
    """A Gaussian density at the cell centres, renormalised to unit discrete mass."""
    X = grid.centers() - np.asarray(mean, dtype=float)
    P = np.linalg.inv(np.atleast_2d(cov))
    m = np.exp(-0.5 * np.einsum("ij,jk,ik->i", X, P, X)).reshape(grid.shape)
    return m / (m.sum() * grid.cell_volume)


def entropy(m: Array, cell_volume: float) -> float:
    """``Ent(m) = sum m log m |cell|`` (with ``0 log 0 = 0``; negative undershoots ignored)."""
    xp = namespace(m)
    pos = m > 0
    return float(xp.sum(xp.where(pos, m * xp.log(xp.where(pos, m, 1.0)), 0.0)) * cell_volume)


def certificate(m: Array, V: Array, lam: float, cell_volume: float) -> float:
    """``lam KL(m || p_m)``, ``p_m ∝ exp(-V_m / lam)``: an upper bound on ``Obj(m) - Obj(mu*)``."""
    xp = namespace(m)
    logp = -V / lam
    logp = logp - (float(xp.max(logp)) + math.log(float(xp.sum(xp.exp(logp - xp.max(logp)))) * cell_volume))
    pos = m > 0
    return lam * float(xp.sum(xp.where(pos, m * (xp.log(xp.where(pos, m, 1.0)) - logp), 0.0)) * cell_volume)


class GridDensity:
    """A density on a fixed grid of cell centres: the measure, its fit, its observables.

    Subclasses provide ``step()``. The feature matrix of the centres is computed
    once; ``signed`` lets the functional accept the small negative undershoots a
    spectral density can have.
    """

    kind = "grid"
    signed = False
    scheme: Any = None  # the time scheme, set by subclasses with :meth:`_use_scheme`

    def __init__(
        self,
        functional: Functional,
        grid: Grid,
        density: npt.ArrayLike,
        eta: float,
        step: int = 0,
        time: float = 0.0,
        edge_mass_warning: float = 1e-4,
        reference_objective: float | None = None,
    ) -> None:
        if not (math.isfinite(eta) and eta > 0):
            raise ValueError(f"time.eta (the grid's time step) must be a finite number > 0, got {eta}")
        if functional.dim != grid.dim:
            raise ValueError(f"the grid has {grid.dim} axes but the measure lives in dimension {functional.dim}")
        xp = namespace(functional.problem.X)
        self.functional, self.grid, self.eta, self.xp = functional, grid, float(eta), xp
        dtype = functional.problem.X.dtype
        self.points = xp.asarray(grid.centers(), dtype=dtype)
        self.features = functional.features(self.points)
        self.density = xp.asarray(density, dtype=dtype).reshape(grid.shape)
        self.step_count, self.time = int(step), float(time)
        self.edge_mass_warning = edge_mass_warning
        self.reference_objective = reference_objective
        self._edge = xp.asarray(grid.edge_mask())
        self._warned = False
        self._fit: Fit | None = None

    def measure(self) -> tuple[Array, Array]:
        return self.points, self.density.ravel() * self.grid.cell_volume

    def fit(self) -> Fit:
        if self._fit is None:
            self._fit = self.fit_of(self.density)
        return self._fit

    def fit_of(self, m: Array) -> Fit:
        """The functional's fit of the density ``m`` on this grid."""
        try:
            return self.functional.fit(self.points, m.ravel() * self.grid.cell_volume, self.features,
                                       signed=self.signed)
        except np.linalg.LinAlgError:
            # A signed density (spectral) far from any measure makes S_m + n lam_a_bar I indefinite: the step
            # that produced it was unstable, which only the step size can fix.
            raise FloatingPointError(
                f"the density at step {self.step_count} is far from a measure (its kernel system is not positive "
                f"definite): the step is unstable at time.eta = {self.eta:g}; reduce time.eta"
            ) from None

    def potential(self) -> Array:
        """``V_m`` at the cell centres, in the grid's shape."""
        return self.functional.potential(self.fit()).reshape(self.grid.shape)

    def entropy(self) -> float:
        return entropy(self.density, self.grid.cell_volume)

    def objective(self) -> float:
        """``Obj(m) = G(m) + lam Ent(m)``, exact on the grid up to quadrature."""
        return self.functional.energy(self.fit())["G"] + self.functional.problem.lam * self.entropy()

    def diagnostics(self) -> dict[str, float]:
        """The :data:`GRID_DIAGNOSTICS` of the current density (``gap`` only when the optimum is known)."""
        return {name: f(self) for name, f in GRID_DIAGNOSTICS.items()
                if name != "gap" or self.reference_objective is not None}

    def restart_solver(self) -> None:
        self.functional.restart_solver()
        self._fit = None

    def _advance(self, new: Array) -> None:
        if not bool(self.xp.all(self.xp.isfinite(new))):
            raise FloatingPointError(
                f"the density became NaN or infinite at step {self.step_count + 1}; reduce time.eta (now {self.eta})"
            )
        self.density, self._fit = new, None
        self.step_count += 1
        self.time += self.eta
        self._check_edges()

    def _check_edges(self) -> None:
        if self._warned:
            return
        frac = float(self.xp.sum(self.density[self._edge])) * self.grid.cell_volume
        if frac > self.edge_mass_warning:
            self._warned = True
            warnings.warn(
                f"{frac:.2e} of the mass is in the outermost cells at step {self.step_count} "
                f"(threshold grid.edge_mass_warning = {self.edge_mass_warning:g}): the box truncates the measure; "
                "enlarge grid.half_width",
                BoxWarning,
                stacklevel=3,
            )

    def _use_scheme(self, schemes: Registry[Any], name: str, history: Sequence[npt.ArrayLike]) -> None:
        """Take the time scheme ``name`` of ``schemes``, continuing from ``history`` (newest first; multi-level
        schemes)."""
        levels = tuple(self.xp.asarray(h, dtype=self.density.dtype).reshape(self.grid.shape) for h in history)
        self.scheme_name, self.scheme = name, schemes[name](levels)

    def state(self) -> DensityState:
        density = to_host(self.density).copy()
        history = () if self.scheme is None else self.scheme.history(density)
        return DensityState(density, self.step_count, self.time, history)


def _mass(g: GridDensity) -> float:
    return float(g.xp.sum(g.density)) * g.grid.cell_volume


GRID_DIAGNOSTICS: Registry[Callable[[GridDensity], float]] = Registry("grid diagnostic")
GRID_DIAGNOSTICS.add("certificate", lambda g: certificate(g.density, g.potential(), g.functional.problem.lam,
                                                          g.grid.cell_volume),
                     "lam KL(m || p_m), an upper bound on Obj(m) - Obj(mu*)")
def _gap(g: GridDensity) -> float:
    if g.reference_objective is None:
        raise ValueError("the gap needs Obj(mu*): build the grid system with reference_objective")
    return g.objective() - g.reference_objective


GRID_DIAGNOSTICS.add("gap", _gap, "Obj(m) - Obj(mu*), when mu* was computed")
GRID_DIAGNOSTICS.add("mass", _mass, "total mass, 1 to round-off")
GRID_DIAGNOSTICS.add("min_density", lambda g: float(g.xp.min(g.density)), "the smallest density value")
GRID_DIAGNOSTICS.add("edge_mass", lambda g: float(g.xp.sum(g.density[g._edge])) * g.grid.cell_volume,
                     "mass in the outermost cells")


class GridScheme(Protocol):
    """A linearly implicit time scheme of :class:`FiniteVolume`: the next density from the current one.

    A scheme is built from its ``history`` (the densities of earlier steps, newest first, as
    :meth:`history` returned them; empty for a new run) and ``history(like)`` is what it keeps
    now, saved with the state so that a resumed run continues bit for bit (empty for one-step
    schemes; NaN for the levels that do not exist yet).
    """

    def advance(self, fv: FiniteVolume, V: Array) -> Array: ...

    def history(self, like: np.ndarray) -> tuple[np.ndarray, ...]: ...


class OneStep:
    """Base of one-step schemes: nothing of earlier steps to keep."""

    def __init__(self, history: Sequence[Array] = ()) -> None:
        pass

    def history(self, like: np.ndarray) -> tuple[np.ndarray, ...]:
        return ()


def existing(level: Array) -> Array | None:
    """A saved history level, or None where it did not exist yet (stored as NaN)."""
    return None if bool(namespace(level).isnan(level).all()) else level


class TwoStep:
    """Base of two-step schemes: the density one step earlier, saved with the state for an exact resume."""

    def __init__(self, history: Sequence[Array] = ()) -> None:
        self.previous = existing(history[0]) if history else None

    def history(self, like: np.ndarray) -> tuple[np.ndarray, ...]:
        """The density one step earlier (NaN before the first step)."""
        return (np.full_like(like, np.nan) if self.previous is None else to_host(self.previous).copy(),)


class ImplicitEuler(OneStep):
    """``(I - eta A(V^k)) m^{k+1} = m^k``: positive for every ``eta``, first order."""

    def advance(self, fv: FiniteVolume, V: Array) -> Array:
        return fv.solve(V, fv.eta, fv.density)


class BDF2(TwoStep):
    """``(I - (2/3) eta A(2 V^k - V^{k-1})) m^{k+1} = (4/3) m^k - (1/3) m^{k-1}``: second order, positivity checked.

    The first step (no ``m^{k-1}`` yet) is an implicit Euler step.
    """

    def __init__(self, history: Sequence[Array] = ()) -> None:
        super().__init__(history)
        self._V_previous: Array | None = None  # V of ``previous``; recomputed after a resume

    def advance(self, fv: FiniteVolume, V: Array) -> Array:
        if self.previous is None:
            new = fv.solve(V, fv.eta, fv.density)
        else:
            V_prev = self._V_previous
            if V_prev is None:
                V_prev = fv.functional.potential(fv.fit_of(self.previous)).reshape(fv.grid.shape)
            rhs = (4.0 * fv.density - self.previous) / 3.0
            new = fv.solve(2.0 * V - V_prev, 2.0 * fv.eta / 3.0, rhs)
        if float(fv.xp.min(new)) < 0:
            raise FloatingPointError(
                f"bdf2 produced a negative density ({float(fv.xp.min(new)):.3g}) at step {fv.step_count + 1}; "
                f"reduce time.eta (now {fv.eta}) or use grid.scheme = 'implicit-euler' (positive for any step)"
            )
        self.previous, self._V_previous = fv.density, V
        return new


GRID_SCHEMES: Registry[Callable[[Sequence[Array]], GridScheme]] = Registry("grid.scheme")
GRID_SCHEMES.add("implicit-euler", ImplicitEuler, "positive for any step, order 1")
GRID_SCHEMES.add("bdf2", BDF2, "order 2, positivity checked")


class FiniteVolume(GridDensity):
    """The density advanced by linearly implicit Scharfetter-Gummel steps (see the module doc).

    ``linear_solver`` names how each step's system is solved (:data:`~mfld.discretizations.linear.LINEAR_SOLVERS`,
    or ``"auto"``); ``solver_tol`` is the Krylov solver's relative residual.
    """

    def __init__(
        self, functional: Functional, grid: Grid, density: npt.ArrayLike, eta: float,
        scheme: str = "implicit-euler", history: Sequence[npt.ArrayLike] = (), linear_solver: str = "auto",
        solver_tol: float = 1e-10, **kwargs: Any,
    ) -> None:
        super().__init__(functional, grid, density, eta, **kwargs)
        self._use_scheme(GRID_SCHEMES, scheme, history)
        self.solver = LINEAR_SOLVERS[linear_solver](grid, functional.problem.lam, solver_tol)

    def solve(self, V: Array, dt: float, rhs: Array) -> Array:
        """``(I - dt A(V))^{-1} rhs`` by the configured linear solver."""
        return self.solver.solve(V, dt, rhs)

    def step(self) -> None:
        """One linearly implicit step of size ``eta``."""
        self._advance(self.scheme.advance(self, self.potential()))
