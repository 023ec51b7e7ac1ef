"""Fourier pseudo-spectral discretisation of the mean-field Fokker-Planck equation.

On a periodic box (an approximation of R^p when the density is negligible at its
edges, exact for periodic feature maps such as ``cos``), with nodes at the cell
centres of a :class:`~mfld.discretizations.grid.Grid` and wave vectors ``xi``:

    d_t m = lam Laplace(m) + div(m grad V_m)

is advanced by the IMEX Euler step (diffusion implicit, drift explicit)

    (1 + tau lam |xi|^2) m^_{k+1} = m^_k + tau (div(m_k grad V_{m_k}))^

with the divergence taken spectrally and ``grad V`` evaluated exactly at the nodes
from the functional (no differentiation of the non-periodic ``|w|^2`` term).
The zero mode is untouched, so mass is conserved to round-off. Positivity is
*not* guaranteed: truncated Fourier series undershoot near steep fronts, and the
minimum density is reported. What spectral accuracy buys is many fewer unknowns
for smooth densities (see ``validation`` for the measured comparison).
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from mfld.model.functional import Functional

from .grid import Grid, GridDensity


class FourierSpectral(GridDensity):
    """Fourier pseudo-spectral density with an IMEX Euler step."""

    kind = "spectral"
    signed = True

    def __init__(self, functional: Functional, grid: Grid, density: npt.ArrayLike, tau: float, **kwargs: Any) -> None:
        super().__init__(functional, grid, density, tau, **kwargs)
        xp = self.xp
        freqs = []
        for k, (n, h) in enumerate(zip(grid.shape, grid.spacing, strict=True)):
            last = k == grid.dim - 1
            f = (xp.fft.rfftfreq(n, d=h) if last else xp.fft.fftfreq(n, d=h)) * (2 * xp.pi)
            shape = [1] * grid.dim
            shape[k] = f.shape[0]
            freqs.append(f.reshape(shape))
        self._xi2 = sum(f * f for f in freqs)
        # First derivatives drop the Nyquist mode (its derivative is not real).
        self._ik = []
        for k, f in enumerate(freqs):
            d = 1j * f
            if grid.shape[k] % 2 == 0:
                nyq = [slice(None)] * grid.dim
                nyq[k] = grid.shape[k] // 2
                d = d.copy()
                d[tuple(nyq)] = 0.0
            self._ik.append(d)

    def step(self) -> None:
        """One IMEX Euler step of size ``tau``."""
        xp, g = self.xp, self.grid
        grad = self.functional.grad_potential(self.fit())
        m_hat = xp.fft.rfftn(self.density)
        div_hat = 0
        for k in range(g.dim):
            flux = self.density * grad[:, k].reshape(g.shape)
            div_hat = div_hat + self._ik[k] * xp.fft.rfftn(flux)
        new_hat = (m_hat + self.tau * div_hat) / (1.0 + self.tau * self.functional.problem.lam * self._xi2)
        self._advance(xp.fft.irfftn(new_hat, s=g.shape, axes=tuple(range(g.dim))))
