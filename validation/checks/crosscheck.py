"""Particles against the grid on the same problem (docs/theory.md §4.3).

For p = 1 and p = 2 (and p = 3 with ``--full``) the grid (finite volumes, BDF2, fine
cells and steps; GMRES steps in p = 3) gives ``mu_t``; particles start from the same
prior and run Euler-Maruyama. At time T,
against the number of particles N (four values over two decades, many seeds):

* the bias of U, measured with the first variation as a control variate:
  ``E[U(mu_N) - <dU/dmu(mu_T), mu_N - mu_T>] - U(mu_T)``. Subtracting the linear
  term (mean O(1/N), fluctuation O(N^{-1/2})) leaves the curvature part of the
  bias, O(1/N), with an O(1/N) fluctuation that seeds can resolve. The raw bias
  ``E U(mu_N) - U(mu_T)`` is reported beside it with its standard error;
* the kernel error ``E sup_{x, x'} |k_{mu_N}(x, x') - k_{mu_T}(x, x')|^2`` on test
  inputs, O(1/N);
* Wasserstein distances between ``mu_N`` and the grid density: exact W1 and W2 in
  1-D against the piecewise-constant density (its mass spread over each cell), sliced
  W1 and W2 in 2-D and 3-D (50 directions, fixed per job) against a sample of it
  (10^5 draws; 10^6 with ``--full``; :class:`~mfld.validation.distances.SlicedReference`);
  about O(N^{-1/2}). Against M draws the distance behaves like sqrt(1/N + 1/M): with
  10^4 draws the full run's p = 3 SW1 slope was -0.45 fitted and -0.34 between
  N = 3200 and 12800; with 10^6, -0.50 and -0.45.

Against the step eta: the weak error of Euler-Maruyama on ``E ||w||^2`` at time
T, from differences between eta and eta/2 with coupled Brownian increments
(the N-dependent part cancels), order 1.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from mfld.discretizations import loop
from mfld.discretizations.grid import FiniteVolume
from mfld.discretizations.mesh import Grid, gaussian_density
from mfld.discretizations.particles import Particles
from mfld.model.functional import Functional

from ..distances import Cells, SlicedReference, distance_names, gram, measure_distance
from ..jobs import Job, Result, Runner, run_serial
from ..problems import low_dim_functional
from ..report import Report, fit_slope

GRID_ETA = 0.02
"""The step of the grid reference (BDF2)."""


def grid_reference(F: Functional, p: int, T: float, cells: int, eta: float) -> tuple[Grid, FiniteVolume]:
    grid = Grid.box(6.0, cells, p)
    fv = FiniteVolume(F, grid, gaussian_density(grid, np.zeros(p), np.eye(p) / F.problem.lam_w), eta, "bdf2")
    loop.run(fv, until=T)
    return grid, fv


def _sample_density(grid: Grid, q: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draws from the piecewise-constant density with cell weights ``q``."""
    cells = rng.choice(q.size, size=size, p=q / q.sum())
    jitter = (rng.random((size, grid.dim)) - 0.5) * np.asarray(grid.spacing)
    return grid.centers()[cells] + jitter


def distances(W: np.ndarray, grid: Grid, q: np.ndarray, reference: SlicedReference | None) -> tuple[float, float]:
    """W1 and W2 of the particles to the grid density: exact in 1-D against the density (its mass spread over
    each cell, not atoms at the centres, which would put a floor of h/4 under W1), sliced against a sample of it
    (``reference``) in 2-D and 3-D."""
    if grid.dim == 1:
        w1, w2, _ = measure_distance((W, np.full(W.shape[0], 1.0 / W.shape[0])), Cells.on(q, grid.lower, grid.upper))
        return w1, w2
    if reference is None:
        raise ValueError(f"in dimension {grid.dim} the distances are taken against a sample: pass a reference")
    return reference.distances(W)


def _se(values: list[float]) -> float:
    """The standard error of the mean of ``values``."""
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def against_N_run(
    p: int,
    Ns: list[int],
    budget: int,
    T: float,
    eta: float,
    cells: int,
    seed: int,
    reference_size: int | None = None,
) -> Result:
    """One job: the grid's mu_T for dimension ``p`` and, for each N, the particle runs' errors against it (the rows
    of :func:`against_N`'s table), the grid density and the last run's particles (for the plots). Above p = 1 the
    distances are taken against ``reference_size`` draws from the grid density."""
    if p > 1 and not reference_size:
        raise ValueError(f"p = {p}: the sliced distances need reference_size, the draws from the grid density")
    F = low_dim_functional(p)
    grid, fv = grid_reference(F, p, T, cells, GRID_ETA)
    pts, qg = fv.points, fv.density.ravel() * grid.cell_volume
    fit_g = F.fit(pts, qg, fv.features)
    U_T = fit_g.U
    dU_mean = float(qg @ F.first_variation_U(fit_g))
    assert F.problem.X_test is not None  # the validation problems have test data
    Xk = F.problem.X_test[:50]
    K_T = gram(F.problem.feature, Xk, pts, qg)
    rng = np.random.default_rng(seed)
    reference = SlicedReference(_sample_density(grid, qg, reference_size, rng), rng) if reference_size else None
    rows: list[list[float]] = []
    last_W = np.zeros((0, p))
    for N in Ns:
        # The control-variate bias fluctuates at O(1/N), like the bias itself: a floor of 32 seeds keeps its
        # standard error near a fifth of the value at the largest N.
        seeds = max(32, budget // N)
        raw, cv, kerr, w1s, w2s = [], [], [], [], []
        for s in range(seeds):
            r = np.random.default_rng([seed, p, N, s])
            system = Particles(F, r.standard_normal((N, p)) / math.sqrt(F.problem.lam_w), eta, r)
            loop.run(system, until=T)
            W, q = system.measure()
            U_N = system.fit().U
            raw.append(U_N - U_T)
            cv.append(U_N - U_T - (float(np.mean(F.first_variation_U(fit_g, W))) - dU_mean))
            kerr.append(float(np.max((gram(F.problem.feature, Xk, W, q) - K_T) ** 2)))
            w1, w2 = distances(W, grid, qg, reference)
            w1s.append(w1)
            w2s.append(w2)
            last_W = W
        rows.append(
            [
                N,
                seeds,
                float(np.mean(cv)),
                _se(cv),
                float(np.mean(raw)),
                _se(raw),
                float(np.sqrt(np.mean(np.square(raw)))),
                float(np.mean(kerr)),
                float(np.mean(w1s)),
                float(np.mean(w2s)),
            ]
        )
    return {"rows": rows, "U_T": U_T, "density": fv.density.tolist(), "last_W": last_W.tolist()}


def against_N(p: int, result: Result, T: float, eta: float, cells: int, report: Report) -> dict[str, Any]:
    """The report's table, slopes, claims and plots for dimension ``p`` from :func:`against_N_run`'s result."""
    grid = Grid.box(6.0, cells, p)
    rows = result["rows"]
    arr = np.array(rows)
    slopes = {
        "U_bias_cv": fit_slope(arr[:, 0], np.abs(arr[:, 2])),
        "U_rms": fit_slope(arr[:, 0], arr[:, 6]),
        "kernel_sq": fit_slope(arr[:, 0], arr[:, 7]),
        "W1": fit_slope(arr[:, 0], arr[:, 8]),
        "W2": fit_slope(arr[:, 0], arr[:, 9]),
    }
    name1, name2 = distance_names(p)
    report.table(
        f"p = {p}: particles (eta = {eta:g}) against the grid ({cells} cells per axis) at T = {T:g}",
        [
            "N",
            "seeds",
            "U bias (control variate)",
            "s.e.",
            "U bias (raw)",
            "s.e.",
            "U rms error",
            "kernel sup err^2",
            name1,
            name2,
        ],
        rows,
    )
    report.table(
        f"p = {p}: fitted slopes in N (log-log)",
        ["U bias (cv)", "U rms", "kernel sup err^2", name1, name2],
        [[round(v, 3) for v in slopes.values()]],
    )
    report.claim(
        f"p = {p}: U bias is O(1/N): slope {slopes['U_bias_cv']:.2f} in [-1.4, -0.6]",
        -1.4 <= slopes["U_bias_cv"] <= -0.6,
    )
    report.claim(
        f"p = {p}: kernel error sup|k_N - k|^2 is O(1/N): slope {slopes['kernel_sq']:.2f} in [-1.4, -0.6]",
        -1.4 <= slopes["kernel_sq"] <= -0.6,
    )
    report.claim(
        f"p = {p}: {name1} to the grid density is about O(N^-1/2): slope {slopes['W1']:.2f} in [-0.7, -0.3]",
        -0.7 <= slopes["W1"] <= -0.3,
    )
    _plot_against_N(report, p, arr, slopes)
    _plot_densities(report, p, grid, np.array(result["density"]), np.array(result["last_W"]), T)
    return {"rows": rows, "slopes": slopes, "U_T": result["U_T"]}


def _plot_against_N(report: Report, p: int, arr: np.ndarray, slopes: dict[str, float]) -> None:
    fig, ax = report.figure(f"p{p}-against-N", figsize=(7, 4.5), constrained_layout=True)
    N = arr[:, 0]
    name1, name2 = distance_names(p)
    for col, name, key in (
        (2, "U bias (cv)", "U_bias_cv"),
        (7, "kernel sup err^2", "kernel_sq"),
        (8, name1, "W1"),
        (9, name2, "W2"),
    ):
        ax.loglog(N, np.abs(arr[:, col]), "o-", label=f"{name}, slope {slopes[key]:.2f}")
    ax.errorbar(N, np.abs(arr[:, 2]), yerr=arr[:, 3], fmt="none", color="C0", capsize=3)
    ax.loglog(N, arr[0, 2] * N[0] / N, "k:", lw=0.8, label="1/N")
    ax.loglog(N, arr[0, 8] * np.sqrt(N[0] / N), "k--", lw=0.8, label="N^-1/2")
    ax.set_xlabel("N")
    ax.set_title(f"particles against the grid, p = {p}")
    ax.legend(fontsize=8)


def _plot_densities(report: Report, p: int, grid: Grid, density: np.ndarray, W: np.ndarray, T: float) -> None:
    fig, ax = report.figure(f"p{p}-densities", figsize=(6, 4.5), constrained_layout=True)
    if p == 1:
        ax.hist(W[:, 0], bins=60, density=True, alpha=0.5, label=f"particles (N = {W.shape[0]})")
        ax.plot(grid.axes()[0], density, "k", label="grid density")
        ax.set_xlabel("w")
    else:
        a, b = grid.axes()[:2]
        marginal = density.sum(axis=2) * grid.spacing[2] if p == 3 else density  # the (w_0, w_1) marginal
        ax.contour(a, b, marginal.T, levels=12, cmap="viridis")
        ax.scatter(W[:, 0], W[:, 1], s=2, color="C3", alpha=0.5, label=f"particles (N = {W.shape[0]})")
        ax.set_xlabel("u" if p == 2 else "u_1")
        ax.set_ylabel("b" if p == 2 else "u_2")
    ax.set_title(f"mu_T at T = {T:g}: grid and particles" + (" (marginal of w_0, w_1)" if p == 3 else ""))
    ax.legend()


class CoupledNoise:
    """The Brownian increments of the finest step, summed ``k`` at a time: step ``j`` of a coarse run sees
    ``(xi_{(j-1)k+1} + ... + xi_{jk}) / sqrt(k)``, so runs with different steps share one Brownian path."""

    def __init__(self, xi: np.ndarray, k: int) -> None:
        self.xi, self.k = xi, k

    def normal(self, step: int, start: int, stop: int, p: int) -> np.ndarray:
        return self.xi[(step - 1) * self.k : step * self.k, start:stop].sum(axis=0) / math.sqrt(self.k)

    def uniform(self, step: int, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
        raise NotImplementedError("the coupled runs carry no label noise")

    def state(self) -> str:
        return json.dumps({"stream": "coupled", "k": self.k})


def weak_run(etas: list[float], N: int, T: float, seed: int, index: int) -> Result:
    """One job: ``E||w||^2`` at T of one seed's runs at each step in ``etas``, Brownian increments coupled."""
    F = low_dim_functional(1)
    fine = etas[-1]
    r = np.random.default_rng([seed, 7, index])
    W0 = r.standard_normal((N, 1))
    xi = r.standard_normal((int(round(T / fine)), N, 1))
    out = []
    for e in etas:
        system = Particles(F, W0.copy(), e, CoupledNoise(xi, int(round(e / fine))))
        loop.run(system, int(round(T / e)))
        out.append(float(np.mean(system.positions**2)))
    return {"second_moment": out}


def weak_error(
    etas: tuple[float, ...], N: int, seeds: int, T: float, report: Report, results: list[Result]
) -> dict[str, Any]:
    """Differences of E||w||^2 at T between eta and eta/2 over the seeds' :func:`weak_run` results."""
    vals = {e: [r["second_moment"][k] for r in results] for k, e in enumerate(etas)}
    rows = []
    for a, b in zip(etas, etas[1:], strict=False):
        d = np.array(vals[a]) - np.array(vals[b])
        rows.append([a, float(d.mean()), float(d.std(ddof=1) / math.sqrt(seeds))])
    order = fit_slope([r[0] for r in rows], [abs(r[1]) for r in rows])
    report.table(
        f"Euler-Maruyama weak error on E||w||^2 at T = {T:g} (p = 1, N = {N}, {seeds} seeds, coupled noise): "
        "E[m2(eta)] - E[m2(eta/2)]",
        ["eta", "difference", "s.e."],
        rows,
    )
    report.claim(f"Euler-Maruyama weak order {order:.2f} in [0.7, 1.3]", 0.7 <= order <= 1.3)
    fig, ax = report.figure("weak-error", figsize=(5, 4), constrained_layout=True)
    ax.errorbar(
        [r[0] for r in rows],
        [abs(r[1]) for r in rows],
        yerr=[r[2] for r in rows],
        marker="o",
        capsize=3,
        label=f"|E m2(eta) - E m2(eta/2)|, order {order:.2f}",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("eta")
    ax.legend()
    return {"rows": rows, "order": order}


def run(
    full: bool = False, seed: int = 0, runner: Runner = run_serial, overrides: dict[str, Any] | None = None
) -> Report:
    """The check; its independent parts run as jobs: one per p (the grid and the particle runs against it) and one
    per seed of the weak error (``mfld validate crosscheck --jobs N``; a run stopped by Ctrl-C continues)."""
    if overrides:
        raise ValueError("the crosscheck takes no --set settings")
    report = Report("crosscheck", "Particles against the grid: O(1/N) bias, O(N^-1/2) distances, weak order 1")
    sizes: dict[str, Any]
    weak: dict[str, Any]
    if full:
        sizes = {"Ns": [50, 200, 800, 3200, 12800], "budget": 102400, "T": 5.0, "eta": 0.01}
        weak = {"etas": [0.4, 0.2, 0.1, 0.05, 0.025, 0.0125], "N": 4000, "seeds": 16, "T": 4.0}
        # p = 3 on 128^3: the grid's own error in U at T = 5 is 9.3e-6 there (6.6e-5 on 48^3, order 2.0;
        # benchmarks/grid_convergence.py), below the particles' standard error at N = 12800 (3.5e-5).
        cells = {1: 2000, 2: 128, 3: 128}
        reference = 1_000_000
    else:
        sizes = {"Ns": [25, 100, 400, 1600], "budget": 6400, "T": 5.0, "eta": 0.05}
        weak = {"etas": [0.4, 0.2, 0.1, 0.05, 0.025], "N": 1000, "seeds": 8, "T": 4.0}
        cells = {1: 1000, 2: 80}
        reference = 100_000
    ps = (1, 2, 3) if full else (1, 2)
    # Costs in point-steps (a grid cell or a particle, for one step: each costs n feature evaluations), an
    # estimate for the time left: the p = 3 job is far longer than a weak-error seed.
    jobs = [
        Job(
            against_N_run,
            # p = 1 is measured against the density itself: no sample, and the job's arguments (its saved
            # result's key) are those it had before the sample's size was one.
            {"p": p, **sizes, "cells": cells[p], "seed": seed, **({"reference_size": reference} if p > 1 else {})},
            f"p = {p}: grid and particles",
            cells[p] ** p * sizes["T"] / GRID_ETA
            + sum(max(32, sizes["budget"] // N) * N for N in sizes["Ns"]) * sizes["T"] / sizes["eta"],
        )
        for p in ps
    ]
    jobs += [
        Job(
            weak_run,
            {"etas": weak["etas"], "N": weak["N"], "T": weak["T"], "seed": seed, "index": s},
            f"weak error, seed {s}",
            weak["N"] * sum(weak["T"] / e for e in weak["etas"]),
        )
        for s in range(weak["seeds"])
    ]
    results = runner(jobs)
    report.data = {
        f"p{p}": against_N(p, results[k], sizes["T"], sizes["eta"], cells[p], report) for k, p in enumerate(ps)
    }
    report.data["weak_error"] = weak_error(
        tuple(weak["etas"]), weak["N"], weak["seeds"], weak["T"], report, results[len(ps) :]
    )
    return report
