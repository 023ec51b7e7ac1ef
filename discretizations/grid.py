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
system is solved, by one of the solvers of :mod:`mfld.discretizations.implicit_solvers`
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mfld.model.backend import Array
from mfld.model.functional import Functional
from mfld.model.options import choice, option
from mfld.model.registry import Registry

from .density import DensityOptions, GridDensity, OneStep, TwoStep
from .implicit_solvers import LINEAR_SOLVERS
from .kinds import DISCRETIZATIONS, Discretization
from .mesh import Grid
from .scharfetter_gummel import GridLike, Mobile
from .state import DensityState


class GridScheme(Protocol):
    """A linearly implicit time scheme of :class:`FiniteVolume`: the next density from the current one.

    A scheme is built from its ``history`` (the densities of earlier steps, newest first, as
    :meth:`history` returned them; empty for a new run) and ``history(like)`` is what it keeps
    now, saved with the state so that a resumed run continues bit for bit (empty for one-step
    schemes; NaN for the levels that do not exist yet).
    """

    levels: int  # the earlier steps it keeps: the length of ``history``

    def advance(self, fv: FiniteVolume, V: Array) -> Array: ...

    def history(self, like: np.ndarray) -> tuple[np.ndarray, ...]: ...


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


GRID_SCHEMES: Registry[Callable[[Sequence[Array]], GridScheme]] = Registry(
    "grid.scheme", group="mfld.grid_schemes", builtins="mfld.discretizations"
)


GRID_SCHEMES.add("implicit-euler", ImplicitEuler, "positive for any step, order 1")

GRID_SCHEMES.add("bdf2", BDF2, "order 2, positivity checked")


@dataclass(frozen=True, kw_only=True)
class FiniteVolumeOptions(DensityOptions):
    """The finite volumes' keys besides the box's: ``grid.scheme``, ``grid.linear_solver``, ``grid.solver_tol``."""

    scheme: str = choice("implicit-euler", "time scheme of the finite volumes", GRID_SCHEMES)
    linear_solver: str = choice(
        "auto", "how each implicit step's sparse system is solved (finite volumes)", LINEAR_SOLVERS, since="0.2.0.dev1"
    )
    solver_tol: float = option(
        1e-10,
        "krylov: relative residual of each step's solve (the density then matches the direct solver's to about this); "
        "cg: a bound on the relative L1 error of each step's solve",
        (int, float),
        lambda v: 0 < v < 1e-3,
        "a number in (0, 1e-3)",
        since="0.2.0.dev1",
    )


class FiniteVolume(GridDensity):
    """The density advanced by linearly implicit Scharfetter-Gummel steps (see the module doc).

    With adaptive steps (``time.adaptive``) implicit Euler is doubled and extrapolated
    (:mod:`~mfld.discretizations.adaptive`); the extrapolation's negative tail values are set to zero, mass kept.

    ``linear_solver`` names how each step's system is solved
    (:data:`~mfld.discretizations.implicit_solvers.LINEAR_SOLVERS`, or ``"auto"``); ``solver_tol`` is the Krylov
    solver's relative residual, and conjugate gradients' bound on the relative L1 error of a step.
    """

    schemes = GRID_SCHEMES

    def __init__(
        self,
        functional: Functional,
        grid: Grid,
        density: npt.ArrayLike,
        eta: float,
        scheme: str = "implicit-euler",
        history: Sequence[npt.ArrayLike] = (),
        linear_solver: str = "auto",
        solver_tol: float = 1e-10,
        **kwargs: Any,
    ) -> None:
        super().__init__(functional, grid, density, eta, **kwargs)
        self._use_scheme(GRID_SCHEMES, scheme, history)
        mobility = getattr(functional, "mobility", None)  # the classical objective's second-layer rate
        seen: GridLike = grid if mobility is None else Mobile(grid, tuple(float(d) for d in mobility))
        self.solver = LINEAR_SOLVERS[linear_solver](seen, functional.problem.lam, solver_tol)

    @classmethod
    def scheme_options(cls, options: Any, history: tuple[np.ndarray, ...]) -> dict[str, Any]:
        return {
            "scheme": options.scheme,
            "history": history,
            "linear_solver": options.linear_solver,
            "solver_tol": options.solver_tol,
        }

    def solve(self, V: Array, dt: float, rhs: Array) -> Array:
        """``(I - dt A(V))^{-1} rhs`` by the configured linear solver."""
        return self.solver.solve(V, dt, rhs)

    def scheme_step(self) -> Array:
        """One linearly implicit step of size ``eta`` by the scheme."""
        return self.scheme.advance(self, self.potential())

    def euler_step(self, m: Array, h: float) -> Array:
        """``(I - h A(V_m))^{-1} m``: linearly implicit Euler from ``m``."""
        V = self.potential() if m is self.density else self.functional.potential(self.fit_of(m)).reshape(m.shape)
        return self.solve(V, h, m)


DISCRETIZATIONS.add(
    "grid",
    Discretization(
        FiniteVolumeOptions,
        FiniteVolume.build,
        FiniteVolume.check,
        GRID_SCHEMES,
        DensityState,
        FiniteVolume.memory,
    ),
    "finite volumes with Scharfetter-Gummel fluxes, p = 1 to 3",
)
