"""The registry of discretisations: ``discretization`` -> system class, its time schemes and its kind.

``density`` discretisations hold a density on a :class:`~mfld.discretizations.mesh.Grid`
and share one constructor ``cls(functional, grid, density, eta, **options)``;
their files store ``/fields``. ``scheme_key`` is the configuration key choosing
among ``schemes`` (None where the discretisation has one scheme of its own);
``linear_solver`` marks the ones that take ``grid.linear_solver``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mfld.model.registry import Registry

from .grid import GRID_SCHEMES, FiniteVolume
from .particles import PARTICLE_SCHEMES, Particles
from .spectral import SPECTRAL_SCHEMES, FourierSpectral
from .state import DensityState, ParticleState


@dataclass(frozen=True)
class Discretization:
    """One way of representing the measure, with the time schemes it offers."""

    cls: type
    density: bool
    schemes: Registry[Any] | None
    scheme_key: str | None
    max_dim: int | None
    linear_solver: bool = False  # takes grid.linear_solver and grid.solver_tol

    @property
    def state_type(self) -> type[ParticleState] | type[DensityState]:
        """The state its systems save and continue from."""
        return DensityState if self.density else ParticleState


DISCRETIZATIONS: Registry[Discretization] = Registry("discretization")
DISCRETIZATIONS.add("particles", Discretization(Particles, False, PARTICLE_SCHEMES, "particles.scheme", None),
                    "interacting particles, any dimension")
DISCRETIZATIONS.add("grid", Discretization(FiniteVolume, True, GRID_SCHEMES, "grid.scheme", 3, True),
                    "finite volumes with Scharfetter-Gummel fluxes, p = 1 to 3")
DISCRETIZATIONS.add("spectral", Discretization(FourierSpectral, True, SPECTRAL_SCHEMES, "spectral.scheme", 3),
                    "Fourier pseudo-spectral with an IMEX step (Euler or SBDF2), p = 1 to 3")
