"""A finite second-layer speed r against the two-timescale limit (docs/theory.md §7).

p = 1 (tanh without bias, d = 1, T = 1), so theta = (a, w) is a 2-D grid and the two-timescale density a 1-D
one on the same w cells. Three measurements:

- **The stationary identity.** ``P*`` (the classical proximal Gibbs fixed point on the (a, w) grid) against
  ``mu*`` (the two-timescale one): the w-marginal's L1 distance, and the conditional mean and variance of ``a``
  against ``a_mu*(w)`` and ``1 / lam_a``, at two resolutions.
- **Averaging on grids** (exact in N). From ``w ~ N(0, 1)`` with ``a`` from its prior ``N(0, 1 / lam_a)`` or from
  its conditional optimum ``N(a_mu0(w), 1 / lam_a)``, the rate-r finite volumes (adaptive steps) and the
  two-timescale finite volumes are stepped to the same output times; ``sup_t W1`` of the w-marginals (exact in
  1-D) and the time averages of the gaps in the data term, kernel alignment, df and test loss. The grids' own
  difference (the averaged Scharfetter-Gummel flux is not the flux of the averaged potential: O(h^2)) is removed
  by Richardson extrapolation of the signed marginal difference over two resolutions, ``(4 d_{h/2} - d_h) / 3``.
  The order q in ``gap ~ r^-q`` is fitted over the three largest r.
- **Particles** (finite N): N particles at rate r (explicit step ``eta / r``, the stability limit), their
  w-marginal's ``sup_t W1`` to the two-timescale grid density, against N and r, seeds averaged.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from mfld.discretizations import loop
from mfld.discretizations.adaptive import StepControl
from mfld.discretizations.grid import FiniteVolume
from mfld.discretizations.mesh import Grid, gaussian_density
from mfld.discretizations.noise import as_noise
from mfld.discretizations.particles import Particles
from mfld.discretizations.stationary import solve_stationary
from mfld.model.classical import ClassicalFunctional, ClassicalOptions
from mfld.model.functional import Functional
from mfld.model.observables import Evaluation, evaluate
from mfld.model.two_timescale import TwoTimescaleFunctional

from ..distances import Cells, exact_1d
from ..jobs import Result
from ..problems import low_dim_problem

W_BOX = 6.0
"""Half-width of the w axis: the prior N(0, 1) and mu* hold all but 1e-9 of their mass inside."""
A_BOX = 10.0
"""Half-width of the a axis: a | w ~ N(a_mu(w), 1 / lam_a) with |a_mu| < 1 and lam_a = 1 leaves below 1e-20."""
GAPS = ("train_loss", "kernel_alignment", "degrees_of_freedom", "test_loss")
"""The observables compared along the way. The data term (train loss) and not U: the two-timescale U includes the
second layer's ridge penalty, the classical data term does not."""


def output_times(T: float, count: int) -> np.ndarray:
    """``count`` equal intervals of ``[0, T]`` and ten geometric times in ``[1e-4 T, 0.1 T]``, where the second
    layer's initial relaxation (of duration O(1 / r)) happens."""
    return np.unique(np.concatenate([np.linspace(0.0, T, count + 1), T * np.geomspace(1e-4, 0.1, 10)]))


def w1_same_cells(delta: np.ndarray, h: float) -> float:
    """W1 between two densities on the same 1-D cells of width ``h`` (uniform within each), from the difference
    of their cell masses ``delta`` (summing to 0): ``int |F_a - F_b| dx``, the CDF difference linear in each cell
    between its cumulative values at the edges."""
    F = np.concatenate([[0.0], np.cumsum(delta)])
    f0, f1 = F[:-1], F[1:]
    a0, a1 = np.abs(f0), np.abs(f1)
    crossing = f0 * f1 < 0
    both = np.where(crossing, a0 + a1, 1.0)
    return float(h * np.sum(np.where(crossing, (f0**2 + f1**2) / (2 * both), 0.5 * (a0 + a1))))


def functional(lam: float, rate: float | None) -> Functional:
    """The two-timescale functional (``rate`` None) or the classical one with the second layer at ``rate``."""
    pb = low_dim_problem(1, lam=lam)
    if rate is None:
        return TwoTimescaleFunctional(pb)
    return ClassicalFunctional(pb, options=ClassicalOptions(second_layer_rate=rate))


def initial_second_layer(lam: float, w: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``a_mu0(w)`` at points ``w`` of the two-timescale functional, for the measure of points ``w``, weights
    ``q``: the second layer's conditional optimum at the start."""
    F = TwoTimescaleFunctional(low_dim_problem(1, lam=lam))
    return F.second_layer(F.fit(w, q, F.features(w))).ravel()


def grids(cells: int) -> tuple[Grid, Grid]:
    """The two-timescale w grid and the (a, w) grid on the same w cells (twice as many a cells)."""
    return Grid.box(W_BOX, cells, 1), Grid((-A_BOX, -W_BOX), (A_BOX, W_BOX), (2 * cells, cells))


def initial_density(lam: float, cells: int, rate: float | None, case: str) -> tuple[Grid, np.ndarray]:
    """``w ~ N(0, 1)``; with a rate, ``a ~ N(0, 1 / lam_a)`` (``case`` "prior") or ``N(a_mu0(w), 1 / lam_a)``
    ("optimum"). The w-marginal is the same cell masses in both grids."""
    w_grid, grid = grids(cells)
    w_density = gaussian_density(w_grid, [0.0], np.eye(1))
    if rate is None:
        return w_grid, w_density
    lam_a = low_dim_problem(1, lam=lam).lam_a
    a, w = grid.axes()
    mean = np.zeros_like(w)
    if case == "optimum":
        mean = initial_second_layer(lam, w_grid.centers(), w_density * w_grid.cell_volume)
    conditional = np.exp(-0.5 * lam_a * (a[:, None] - mean[None, :]) ** 2)
    conditional /= conditional.sum(axis=0) * grid.spacing[0]
    return grid, (conditional * w_density[None, :]).ravel()


def grid_run(lam: float, cells: int, T: float, count: int, tol: float, rate: float | None, case: str) -> Result:
    """Finite volumes with adaptive steps (``time.tol``) to the :func:`output_times`: the w-marginal's cell masses,
    the objective and the :data:`GAPS` observables at each, the steps taken and the wall time."""
    F = functional(lam, rate)
    grid, m0 = initial_density(lam, cells, rate, case)
    fv = FiniteVolume(F, grid, m0, 0.01 / (rate or 1.0), control=StepControl(tol, 1.0))
    out: dict[str, list[Any]] = {"time": [], "marginal": [], "objective": [], **{k: [] for k in GAPS}}
    start = time.perf_counter()
    for t in output_times(T, count):
        loop.run(fv, until=float(t))
        mass = fv.density.reshape(grid.shape) * grid.cell_volume
        out["marginal"].append((mass if rate is None else mass.sum(axis=0)).tolist())
        out["time"].append(fv.time)
        out["objective"].append(fv.objective())
        for name, value in evaluate(Evaluation(F, fv.fit()), GAPS).items():
            out[name].append(value)
    return {**out, "steps": fv.step_count, "wall": time.perf_counter() - start}


def stationary_run(lam: float, cells: int) -> Result:
    """P* on the (a, w) grid and mu* on the w grid, solved directly: the marginal's L1 distance and the Pinsker
    bound of the two certificates, the conditional mean's mean error and the conditional variance's largest
    relative error; and the two objectives (to put the rate-r and two-timescale gaps on one scale)."""
    w_grid, grid = grids(cells)
    star = solve_stationary(functional(lam, None), w_grid, tol=1e-15)
    P = solve_stationary(functional(lam, 1.0), grid, tol=1e-15)
    density = P.density.reshape(grid.shape)
    h_a, a = grid.spacing[0], grid.axes()[0]
    marginal = density.sum(axis=0) * h_a
    mu = star.density.ravel()
    conditional = density / marginal[None, :] * h_a
    mean = a @ conditional
    var = ((a[:, None] - mean[None, :]) ** 2 * conditional).sum(axis=0)
    weights = mu * w_grid.cell_volume
    a_star = initial_second_layer(lam, w_grid.centers(), weights)
    lam_a = low_dim_problem(1, lam=lam).lam_a
    return {
        "cells": cells,
        "l1": float(np.abs(marginal - mu).sum() * w_grid.spacing[0]),
        "bound": math.sqrt(2 * star.certificate / lam) + math.sqrt(2 * P.certificate / lam),
        "mean_error": float(weights @ np.abs(mean - a_star)),
        "var_error": float(np.max(np.abs(var * lam_a - 1.0))),
        "objective_classical": float(P.objective),
        "objective_two_timescale": float(star.objective),
    }


def particle_run(
    lam: float,
    rate: float | None,
    N: int,
    eta: float,
    T: float,
    count: int,
    cells: int,
    seed: int,
    index: int,
    scheme: str = "euler-maruyama",
    case: str = "prior",
) -> Result:
    """``N`` particles, ``w ~ N(0, 1)``, ``a`` from its prior (``case``; or from its conditional optimum
    ``N(a_mu0(w), 1 / lam_a)`` for the particles' own w, "optimum"), at ``rate`` (None: the two-timescale particles)
    with step ``eta / rate`` (Euler-Maruyama, at its stability limit) or ``eta`` (``scheme =
    "exact-second-layer"``, :mod:`mfld.discretizations.second_layer`): W1 of the w-marginal to the two-timescale
    grid density at ``count + 1`` equal times, the steps and the wall time."""
    times = np.linspace(0.0, T, count + 1)
    w_grid, _ = grids(cells)
    reference = FiniteVolume(
        functional(lam, None), w_grid, gaussian_density(w_grid, [0.0], np.eye(1)), 0.01, control=StepControl(0.01, 1)
    )
    cells_at = []
    for t in times:
        loop.run(reference, until=float(t))
        cells_at.append(Cells.on(reference.density * w_grid.cell_volume, (-W_BOX,), (W_BOX,)))
    rng = np.random.default_rng([seed, index, 11])
    F = functional(lam, rate)
    w0 = rng.standard_normal((N, 1))
    if rate is None:
        positions = w0
    else:
        a0 = rng.standard_normal((N, 1)) / math.sqrt(F.problem.lam_a)
        if case == "optimum":
            a0 += initial_second_layer(lam, w0, np.full(N, 1.0 / N))[:, None]
        positions = np.hstack([a0, w0])
    step = eta / (rate or 1.0) if scheme == "euler-maruyama" else eta
    every = round(T / count / step)
    if not math.isclose(every * step * count, T, rel_tol=1e-9):
        raise ValueError(f"timescales: T / count = {T / count:g} is not a whole number of steps eta / r = {step:g}")
    system = Particles(F, positions, step, as_noise(rng), scheme=scheme)

    def observe(_: object) -> dict[str, float]:
        k = min(round(system.step_count / every), count)
        return {"W1": exact_1d(np.asarray(system.positions)[:, -1], cells_at[k])[0]}

    rec = loop.Recorder(observe, every)
    start = time.perf_counter()
    loop.run(system, every * count, [rec])
    series = rec.series()
    return {
        "time": series["time"].tolist(),
        "W1": series["W1"].tolist(),
        "steps": system.step_count,
        "wall": time.perf_counter() - start,
    }


def averaging(results: list[Result], limit: list[Result], T: float) -> dict[str, Any]:
    """sup_t W1 of the marginal gaps on each grid and extrapolated, and the time-averaged observable gaps on the
    finer grid, of one rate's runs (``results``: coarse, fine) against the two-timescale runs (``limit``)."""
    coarse, fine = (np.array(r["marginal"]) - np.array(lim["marginal"]) for r, lim in zip(results, limit, strict=True))
    h_coarse, h_fine = 2 * W_BOX / coarse.shape[1], 2 * W_BOX / fine.shape[1]
    pairs = fine.reshape(fine.shape[0], -1, 2).sum(axis=2)  # the fine marginal on the coarse cells
    extrapolated = (4 * pairs - coarse) / 3
    t = np.array(results[1]["time"])
    out = {
        "sup_W1": [max(w1_same_cells(d, h) for d in D) for D, h in ((coarse, h_coarse), (fine, h_fine))],
        "sup_W1_extrapolated": max(w1_same_cells(d, h_coarse) for d in extrapolated),
        "steps": results[1]["steps"],
        "wall": results[1]["wall"],
    }
    for name in GAPS:
        gap = np.abs(np.array(results[1][name]) - np.array(limit[1][name]))
        out[name] = float(np.trapezoid(gap, t) / T)
    return out
