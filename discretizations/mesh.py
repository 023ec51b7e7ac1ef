"""The tensor grid of cells on a box, the check that a box holds the prior, and Gaussian densities on it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


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
