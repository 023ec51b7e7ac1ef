"""Fourier pseudo-spectral discretisation of the mean-field Fokker-Planck equation.

On a periodic box (an approximation of R^p when the density is negligible at its
edges, exact for periodic feature maps such as ``cos``), with nodes at the cell
centres of a :class:`~mfld.discretizations.mesh.Grid` and wave vectors ``xi``:

    d_t m = lam Laplace(m) + div(m grad V_m)

is advanced by an implicit-explicit scheme (diffusion implicit, drift explicit), with
``N_k = (div(m_k grad V_{m_k}))^`` (registered in :data:`SPECTRAL_SCHEMES`):

* ``"imex-euler"``: ``(1 + eta lam |xi|^2) m^_{k+1} = m^_k + eta N_k``, first order;
* ``"sbdf2"`` (semi-implicit BDF2, Ascher, Ruuth & Wetton 1995):
  ``(3 + 2 eta lam |xi|^2) m^_{k+1} = 4 m^_k - m^_{k-1} + 2 eta (2 N_k - N_{k-1})``,
  second order; its first step is an IMEX Euler step.

The divergence is taken spectrally and ``grad V`` evaluated exactly at the nodes
from the functional (no differentiation of the non-periodic ``|w|^2`` term).
The zero mode is untouched, so mass is conserved to round-off. Positivity is
*not* guaranteed: truncated Fourier series undershoot near steep fronts, and the
minimum density is reported. What spectral accuracy buys is many fewer unknowns
for smooth densities (see ``validation`` for the measured comparison).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mfld.model.backend import Array
from mfld.model.functional import Functional
from mfld.model.options import choice
from mfld.model.registry import Registry

from .density import DensityOptions, GridDensity, OneStep, TwoStep
from .kinds import DISCRETIZATIONS, Discretization
from .mesh import Grid
from .state import DensityState


class SpectralScheme(Protocol):
    """An IMEX step of :class:`FourierSpectral` in Fourier space; ``history`` as for the grid schemes."""

    levels: int  # the earlier steps it keeps: the length of ``history``

    def advance(self, sp: FourierSpectral, m_hat: Array, drift_hat: Array) -> Array: ...

    def history(self, like: np.ndarray) -> tuple[np.ndarray, ...]: ...


class ImexEuler(OneStep):
    """``(1 + eta lam |xi|^2) m^_{k+1} = m^_k + eta N_k``: first order."""

    def advance(self, sp: FourierSpectral, m_hat: Array, drift_hat: Array) -> Array:
        return (m_hat + sp.eta * drift_hat) / (1.0 + sp.eta * sp.functional.problem.lam * sp.xi2)


class SBDF2(TwoStep):
    """``(3 + 2 eta lam |xi|^2) m^_{k+1} = 4 m^_k - m^_{k-1} + 2 eta (2 N_k - N_{k-1})``: second order."""

    def __init__(self, history: Sequence[Array] = ()) -> None:
        super().__init__(history)
        self._previous_hat: tuple[Array, Array] | None = None  # m^ and N of ``previous``; recomputed after a resume

    def advance(self, sp: FourierSpectral, m_hat: Array, drift_hat: Array) -> Array:
        if self.previous is None:
            new = ImexEuler().advance(sp, m_hat, drift_hat)
        else:
            if self._previous_hat is None:
                self._previous_hat = (sp.xp.fft.rfftn(self.previous), sp.drift_hat(self.previous))
            prev_hat, prev_drift = self._previous_hat
            eta, lam = sp.eta, sp.functional.problem.lam
            rhs = 4.0 * m_hat - prev_hat + 2.0 * eta * (2.0 * drift_hat - prev_drift)
            new = rhs / (3.0 + 2.0 * eta * lam * sp.xi2)
        self.previous, self._previous_hat = sp.density, (m_hat, drift_hat)
        return new


SPECTRAL_SCHEMES: Registry[Callable[[Sequence[Array]], SpectralScheme]] = Registry(
    "spectral.scheme", group="mfld.spectral_schemes", builtins="mfld.discretizations"
)
SPECTRAL_SCHEMES.add("imex-euler", ImexEuler, "order 1")
SPECTRAL_SCHEMES.add("sbdf2", SBDF2, "semi-implicit BDF2, order 2")


@dataclass(frozen=True, kw_only=True)
class SpectralOptions(DensityOptions):
    """The spectral solver's key besides the box's: its IMEX scheme, ``spectral.scheme``."""

    scheme: str = choice(
        "imex-euler",
        "time scheme of the Fourier spectral solver (drift explicit, diffusion implicit)",
        SPECTRAL_SCHEMES,
        key="spectral.scheme",
        since="0.2.0.dev1",
    )


class FourierSpectral(GridDensity):
    """Fourier pseudo-spectral density advanced by an IMEX scheme of :data:`SPECTRAL_SCHEMES`, or with adaptive
    steps (``time.adaptive``) by IMEX Euler doubled and extrapolated (:mod:`~mfld.discretizations.adaptive`)."""

    kind = "spectral"
    signed = True
    schemes = SPECTRAL_SCHEMES

    @classmethod
    def scheme_options(cls, options: Any, history: tuple[np.ndarray, ...]) -> dict[str, Any]:
        return {"scheme": options.scheme, "history": history}

    def __init__(
        self,
        functional: Functional,
        grid: Grid,
        density: npt.ArrayLike,
        eta: float,
        scheme: str = "imex-euler",
        history: Sequence[npt.ArrayLike] = (),
        **kwargs: Any,
    ) -> None:
        if getattr(functional, "mobility", None) is not None:
            raise ValueError(
                "model.second_layer_rate != 1 needs a mobility per axis, which the spectral solver does not have; "
                "use discretization = 'grid' or 'particles'"
            )
        super().__init__(functional, grid, density, eta, **kwargs)
        xp = self.xp
        self._use_scheme(SPECTRAL_SCHEMES, scheme, history)
        freqs = []
        for k, (n, h) in enumerate(zip(grid.shape, grid.spacing, strict=True)):
            last = k == grid.dim - 1
            f = (xp.fft.rfftfreq(n, d=h) if last else xp.fft.fftfreq(n, d=h)) * (2 * xp.pi)
            shape = [1] * grid.dim
            shape[k] = f.shape[0]
            freqs.append(f.reshape(shape))
        self.xi2 = sum(f * f for f in freqs)
        # First derivatives drop the Nyquist mode (its derivative is not real).
        self._ik = []
        for k, f in enumerate(freqs):
            d = 1j * f
            if grid.shape[k] % 2 == 0:
                nyq: list[slice | int] = [slice(None)] * grid.dim
                nyq[k] = grid.shape[k] // 2
                d = d.copy()
                d[tuple(nyq)] = 0.0
            self._ik.append(d)

    def drift_hat(self, m: Array) -> Array:
        """``N = (div(m grad V_m))^``, the explicit part, with the divergence taken spectrally."""
        xp, g = self.xp, self.grid
        fit = self.fit() if m is self.density else self.fit_of(m)
        grad = self.functional.grad_potential(fit)
        out = self._ik[0] * xp.fft.rfftn(m * grad[:, 0].reshape(g.shape))
        for k in range(1, g.dim):
            out = out + self._ik[k] * xp.fft.rfftn(m * grad[:, k].reshape(g.shape))
        return out

    def scheme_step(self) -> Array:
        """One step of the configured IMEX scheme, of size ``eta``."""
        new_hat = self.scheme.advance(self, self.xp.fft.rfftn(self.density), self.drift_hat(self.density))
        return self.xp.fft.irfftn(new_hat, s=self.grid.shape, axes=tuple(range(self.grid.dim)))

    def euler_step(self, m: Array, h: float) -> Array:
        """``(1 + h lam |xi|^2) m^_new = m^ + h N(m)``: IMEX Euler from ``m``."""
        new_hat = (self.xp.fft.rfftn(m) + h * self.drift_hat(m)) / (1.0 + h * self.functional.problem.lam * self.xi2)
        return self.xp.fft.irfftn(new_hat, s=self.grid.shape, axes=tuple(range(self.grid.dim)))


DISCRETIZATIONS.add(
    "spectral",
    Discretization(
        SpectralOptions,
        FourierSpectral.build,
        FourierSpectral.check,
        SPECTRAL_SCHEMES,
        DensityState,
        FourierSpectral.memory,
    ),
    "Fourier pseudo-spectral with an IMEX step (Euler or SBDF2), p = 1 to 3",
)
