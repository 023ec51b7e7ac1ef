"""A density on a grid as a discretised measure: its fit, entropy, certificate and diagnostics, and the bases
of one- and two-step time schemes (shared by the finite volumes and the spectral solver)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from mfld.model.backend import Array, namespace, to_host
from mfld.model.distributed import Communicator
from mfld.model.functional import Fit, Functional
from mfld.model.options import flag, internal, option, positive, ref
from mfld.model.registry import Registry

from .adaptive import Controller, StepControl, advance
from .mesh import BoxWarning, Grid, check_box, gaussian_density
from .state import DensityState, check_levels, existing


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


def _all(v: Any, ok: Callable[[Any], bool]) -> bool:
    items = v if isinstance(v, list) else [v]
    return 1 <= len(items) <= 3 and all(ok(x) for x in items)


def _is_pos_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < float("inf")


def _is_cell_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 3


@dataclass(frozen=True, kw_only=True)
class DensityOptions:
    """What a density run is built from: the ``[grid]`` keys of its fields' names (the box ``[-L, L]^p``, its
    cells, whether to record the gap to mu*, the edge-mass warning) and the step ``time.eta``. A discretisation
    adds its scheme's keys in a subclass."""

    section: ClassVar[str] = "grid"
    half_width: float | list[float] = option(
        6.0,
        "box [-L, L]^p (a list: one L per axis); refused if it cannot hold the prior",
        (int, float, list),
        lambda v: _all(v, _is_pos_number),
        "a number > 0 or a list of 1 to 3 of them",
    )
    cells: int | list[int] = option(
        64,
        "cells per axis (a list: one count per axis)",
        (int, list),
        lambda v: _all(v, _is_cell_count),
        "an integer >= 3 or a list of 1 to 3 of them",
    )
    edge_mass_warning: float = positive(1e-4, "warn once when this fraction of mass reaches the outermost cells")
    gap: bool = flag(True, "solve for mu* first and record `gap` = Obj(m_t) - Obj(mu*)")
    eta: float = ref("time.eta")
    adaptive: bool = ref("time.adaptive")
    tol: float = ref("time.tol")
    eta_max: float = ref("time.eta_max")
    scheme_options: Any = internal()


def prior_sd(functional: Functional) -> list[float]:
    """Per-axis standard deviation of the prior: ``1/sqrt(lam_a)`` for ``a``, ``1/sqrt(lam_w)`` for ``w``."""
    pb = functional.problem
    return [pb.lam_a**-0.5] * (functional.dim - pb.p) + [pb.lam_w**-0.5] * pb.p


def grid_for(functional: Functional, half_width: float | list[float], cells: int | list[int], max_dim: int = 3) -> Grid:
    """The box ``[-L, L]^p`` with ``cells`` per axis in the measure's dimension ``p``, refused when ``p > max_dim``
    or when the box cannot hold the prior."""
    if functional.dim > max_dim:
        raise ValueError(
            f"grids need a parameter dimension p <= {max_dim}; this problem has p = {functional.dim} "
            f"(feature {functional.problem.feature.name!r} on d = {functional.problem.d} inputs); "
            "use discretization = 'particles', or a smaller data.d"
        )
    grid = Grid.box(half_width, cells, functional.dim)
    check_box(grid, prior_sd(functional))
    return grid


class GridDensity:
    """A density on a fixed grid of cell centres: the measure, its fit, its observables, its steps.

    Subclasses provide :meth:`scheme_step` (a step of size ``eta`` by their time scheme) and :meth:`euler_step`
    (their first-order step of any size, from any density: what ``control``, the adaptive steps of
    :mod:`~mfld.discretizations.adaptive`, doubles and extrapolates). The feature matrix of the centres is
    computed once; ``signed`` lets the functional accept the small negative undershoots a spectral density can
    have.
    """

    kind = "grid"
    signed = False
    scheme: Any = None  # the time scheme, set by subclasses with :meth:`_use_scheme`
    schemes: ClassVar[Registry[Any]]  # the registry of the subclass's time schemes
    max_dim: ClassVar[int] = 3

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
        scheme_options: Any = None,
        control: StepControl | None = None,
        controller: Controller | None = None,
    ) -> None:
        self._scheme_options = scheme_options  # the time scheme's own options, for _use_scheme
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
        self.control = control
        self.controller = (controller or Controller(self.eta)) if control is not None else None
        self.horizon = math.inf  # adaptive steps end on it (the time loop's ``until``)

    @classmethod
    def build(
        cls,
        options: DensityOptions,
        functional: Functional,
        state: DensityState | None = None,
        comm: Communicator | None = None,
        optimum: Callable[[Grid], float] | None = None,
    ) -> Self:
        """A fresh run of ``options`` (``state`` None: the prior's Gaussian on the cells) or one continuing
        ``state``. With ``options.gap``, ``optimum(grid)`` gives Obj(mu*) on the run's grid (a resume passes
        the one its file stores). One process only."""
        if comm is not None and comm.size > 1:
            raise ValueError(f"only particles can be split over MPI processes; run discretization = {cls.kind!r} alone")
        grid = cls.check(options, functional)
        reference = None
        if options.gap:
            if optimum is None:
                raise ValueError("grid.gap needs Obj(mu*): pass optimum, or set grid.gap = false")
            reference = optimum(grid)
        history: tuple[np.ndarray, ...] = ()
        control = StepControl(options.tol, options.eta_max) if options.adaptive else None
        controller = None
        if state is None:
            density = gaussian_density(grid, np.zeros(grid.dim), np.diag(np.square(prior_sd(functional))))
            step, time = 0, 0.0
        elif isinstance(state, DensityState):
            density, step, time, history = state.density, state.step, state.time, state.history
            if (state.control is not None) != options.adaptive:
                raise ValueError(
                    f"the saved state was written with time.adaptive = {state.control is not None}; "
                    "continue it with the same setting"
                )
            controller = None if state.control is None else Controller.from_array(state.control)
        else:
            raise TypeError(f"a density run continues from a density, not a {type(state).__name__}")
        return cls(
            functional,
            grid,
            density,
            options.eta,
            step=step,
            time=time,
            reference_objective=reference,
            edge_mass_warning=options.edge_mass_warning,
            scheme_options=options.scheme_options,
            control=control,
            controller=controller,
            **cls.scheme_options(options, history),
        )

    @classmethod
    def check(cls, options: DensityOptions, functional: Functional) -> Grid:
        """The run's grid, refused before any work when the dimension is too high or the box too small, or when
        adaptive steps are asked of a multi-level time scheme."""
        scheme = getattr(options, "scheme", None)
        if options.adaptive and scheme is not None and cls.schemes[scheme].levels > 0:
            one_step = [name for name in cls.schemes if cls.schemes[name].levels == 0]
            raise ValueError(
                f"time.adaptive extrapolates a one-step scheme to second order; {cls.schemes.key} = {scheme!r} "
                f"keeps earlier steps: use {cls.schemes.key} = {one_step[0]!r}, or time.adaptive = false"
            )
        if options.adaptive:
            StepControl(options.tol, options.eta_max)
        return grid_for(functional, options.half_width, options.cells, cls.max_dim)

    @classmethod
    def memory(cls, options: DensityOptions, n: int, n_test: int, p: int, budget: int) -> dict[str, int]:
        """Bytes (float64) of the largest arrays, by the configuration key that sizes them: the features of every
        cell (n per cell, twice), the sparse operator and the stationary solver's history (a dozen arrays of the
        cells). Nothing above ``max_dim``, where :meth:`check` refuses the dimension with a better message."""
        if p > cls.max_dim:
            return {}
        cells = options.cells
        size = math.prod(cells if isinstance(cells, list) else [cells] * p)
        return {"grid.cells": 8 * size * (2 * n + 12 + 6 * 3)}

    @classmethod
    def scheme_options(cls, options: Any, history: tuple[np.ndarray, ...]) -> dict[str, Any]:
        """The constructor's keyword arguments for the discretisation's own options: its scheme, continuing from
        ``history``."""
        return {}

    def measure(self) -> tuple[Array, Array]:
        return self.points, self.density.ravel() * self.grid.cell_volume

    def fit(self) -> Fit:
        if self._fit is None:
            self._fit = self.fit_of(self.density)
        return self._fit

    def fit_of(self, m: Array) -> Fit:
        """The functional's fit of the density ``m`` on this grid."""
        try:
            return self.functional.fit(
                self.points, m.ravel() * self.grid.cell_volume, self.features, signed=self.signed
            )
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
        """The :data:`GRID_DIAGNOSTICS` of the current density (``gap`` only when the optimum is known, the
        :data:`ADAPTIVE` ones only with adaptive steps)."""
        return {
            name: f(self)
            for name, f in GRID_DIAGNOSTICS.items()
            if (name != "gap" or self.reference_objective is not None)
            and (name not in ADAPTIVE or self.controller is not None)
        }

    def scheme_step(self) -> Array:
        """The density one step of size ``eta`` later, by the time scheme."""
        raise NotImplementedError

    def euler_step(self, m: Array, h: float) -> Array:
        """The density a first-order step of size ``h`` takes ``m`` to (pure: nothing of this system changes)."""
        raise NotImplementedError

    def step(self) -> None:
        """One step: of size ``eta`` by the scheme, or with ``control`` of the size the controller accepts."""
        if self.control is None or self.controller is None:
            self._advance(self.scheme_step())
            return
        where = f"t = {self.time:g} (step {self.step_count + 1})"
        new, controller = advance(
            self.euler_step,
            self.density,
            self.controller,
            self.control,
            self.grid.cell_volume,
            not self.signed,
            where,
            self.horizon - self.time if self.horizon > self.time else math.inf,
        )
        self.controller = controller
        self._advance(new)

    def _advance(self, new: Array) -> None:
        if not bool(self.xp.all(self.xp.isfinite(new))):
            raise FloatingPointError(
                f"the density became NaN or infinite at step {self.step_count + 1}; reduce time.eta (now {self.eta})"
            )
        self.density, self._fit = new, None
        self.step_count += 1
        if self.controller is not None:
            self.time += self.controller.last
        else:
            self.time = self.step_count * self.eta  # exact: a sum of etas drifts (40.0000000000003 after 400 of 0.1)
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
        schemes); a scheme with options of its own is built with them (``entry(history, options)``)."""
        entry = schemes[name]
        arrays = tuple(self.xp.asarray(h, dtype=self.density.dtype).reshape(self.grid.shape) for h in history)
        check_levels(schemes.key, name, entry.levels, arrays, self.step_count, "mu_previous")
        options = self._scheme_options
        self.scheme_name, self.scheme = name, entry(arrays) if options is None else entry(arrays, options)

    def state(self) -> DensityState:
        density = to_host(self.density).copy()
        history = () if self.scheme is None else self.scheme.history(density)
        control = None if self.controller is None else self.controller.array()
        return DensityState(density, self.step_count, self.time, history, control)


def _mass(g: GridDensity) -> float:
    return float(g.xp.sum(g.density)) * g.grid.cell_volume


HOST_READS_PER_STEP = 6
"""Scalar reads from the device a density step makes at most on a GPU backend: the fit's check of its measure and
its dual objective U (two), that the new density is finite, the mass in the edge cells (until it warns once), and
one of the scheme's or linear solver's: bdf2's minimum (its positivity refusal), krylov's sign test of the right
side. No array goes to the host inside a step, except with ``grid.linear_solver = "direct"``, whose sparse LU CuPy
makes on the CPU (``auto`` takes cg on a GPU for that reason; cg declares its own reads, which depend on its
iterations: :class:`~mfld.discretizations.implicit_solvers.ConjugateGradient`).
tests/discretizations/test_fake_cupy.py holds the step to this."""


GRID_DIAGNOSTICS: Registry[Callable[[GridDensity], float]] = Registry(
    "grid diagnostic", group="mfld.grid_diagnostics", builtins="mfld.discretizations"
)


GRID_DIAGNOSTICS.add(
    "certificate",
    lambda g: certificate(g.density, g.potential(), g.functional.problem.lam, g.grid.cell_volume),
    "lam KL(m || p_m), an upper bound on Obj(m) - Obj(mu*)",
)


def _gap(g: GridDensity) -> float:
    if g.reference_objective is None:
        raise ValueError("the gap needs Obj(mu*): build the grid system with reference_objective")
    return g.objective() - g.reference_objective


GRID_DIAGNOSTICS.add("gap", _gap, "Obj(m) - Obj(mu*), when mu* was computed")

GRID_DIAGNOSTICS.add("mass", _mass, "total mass, 1 to round-off")

GRID_DIAGNOSTICS.add("min_density", lambda g: float(g.xp.min(g.density)), "the smallest density value")

ADAPTIVE = ("step_size", "rejected_steps")
"""The diagnostics of adaptive steps: the last step taken and the attempts rejected so far."""

GRID_DIAGNOSTICS.add(
    "step_size",
    lambda g: g.controller.last if g.controller is not None else g.eta,
    "adaptive steps: the size of the last step",
)

GRID_DIAGNOSTICS.add(
    "rejected_steps",
    lambda g: float(g.controller.rejected) if g.controller is not None else 0.0,
    "adaptive steps: attempts rejected so far (error above time.tol, or not finite)",
)

GRID_DIAGNOSTICS.add(
    "edge_mass", lambda g: float(g.xp.sum(g.density[g._edge])) * g.grid.cell_volume, "mass in the outermost cells"
)


class OneStep:
    """Base of one-step schemes: nothing of earlier steps to keep."""

    levels = 0

    def __init__(self, history: Sequence[Array] = ()) -> None:
        pass

    def history(self, like: np.ndarray) -> tuple[np.ndarray, ...]:
        return ()


class TwoStep:
    """Base of two-step schemes: the density one step earlier, saved with the state for an exact resume."""

    levels = 1

    def __init__(self, history: Sequence[Array] = ()) -> None:
        self.previous = existing(history[0]) if history else None

    def history(self, like: np.ndarray) -> tuple[np.ndarray, ...]:
        """The density one step earlier (NaN before the first step)."""
        return (np.full_like(like, np.nan) if self.previous is None else to_host(self.previous).copy(),)
