"""The label-noise procedure on particles against its expected dynamics on the grid.

p = 2 (tanh with bias, d = 1). Particles run the stochastic procedure (fresh
``eps ~ Unif[-s, s]`` every step); the grid runs the deterministic MFLD of
``Obj + (s^2 / 6n) df``. At time T both have reached stationarity; their df and
U are compared, the particle values averaged over the second half of the run
and over seeds. The s = 0 row measures the particle discretisation's own bias
(finite N and eta), the yardstick for the other rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mfld.discretizations import loop
from mfld.discretizations.grid import FiniteVolume
from mfld.discretizations.mesh import Grid, gaussian_density
from mfld.discretizations.noise import as_noise
from mfld.discretizations.particles import Particles
from mfld.model.label_noise import ExpectedLabelNoiseFunctional, LabelNoiseDrift
from mfld.model.observables import Evaluation, degrees_of_freedom, evaluate

from ..jobs import Job, Result, Runner, run_serial
from ..problems import low_dim_functional
from ..report import Report
from .training import experiment_config


def grid_run(lam: float, cells: int, T: float, s: float, feature: str = "tanh_bias") -> Result:
    """The expected dynamics, MFLD of ``Obj + (s^2 / 6n) df`` on the grid, to time ``T``: df along the way, U and
    the test loss at T; ``feature`` a registered feature map with bias (p = 2)."""
    F = low_dim_functional(2, lam=lam, feature=feature)
    grid = Grid.box(6.0, cells, 2)
    G = ExpectedLabelNoiseFunctional(F, s) if s > 0 else F
    fv = FiniteVolume(G, grid, gaussian_density(grid, [0.0, 0.0], np.eye(2)), 0.25)
    g = loop.Recorder(lambda sys: {"df": degrees_of_freedom(F, sys.fit())}, record_start=False, record_end=False)
    loop.run(fv, until=T, observers=[g])
    end = evaluate(Evaluation(F, fv.fit()), ["U", "test_loss"])
    return {"time": g.series()["time"].tolist(), "df": g.series()["df"].tolist(), **end}


def particle_run(
    lam: float, N: int, eta: float, T: float, s: float, seed: int, index: int, feature: str = "tanh_bias"
) -> Result:
    """The label-noise procedure on ``N`` particles to time ``T``: df along the way, df, U and the test loss averaged
    over t > T/2. The initial particles depend on ``seed`` and ``index`` only (runs at several ``s`` are paired)."""
    F = low_dim_functional(2, lam=lam, feature=feature)
    rng = np.random.default_rng([seed, index, 5])
    noise = as_noise(rng)
    drift = LabelNoiseDrift(F, s, noise.uniform) if s > 0 else None
    p = Particles(F, rng.standard_normal((N, 2)), eta, noise, drift=drift)
    rec = loop.Recorder(
        lambda sys: {"df": degrees_of_freedom(F, sys.fit()), **evaluate(Evaluation(F, sys.fit()), ["U", "test_loss"])},
        10,
        record_start=False,
        record_end=False,
    )
    loop.run(p, until=T, observers=[rec])
    series = rec.series()
    tail = series["time"] > T / 2
    return {
        "time": series["time"].tolist(),
        "df": series["df"].tolist(),
        "df_tail": float(np.mean(series["df"][tail])),
        "U_tail": float(np.mean(series["U"][tail])),
        "test_tail": float(np.mean(series["test_loss"][tail])),
    }


def run(
    full: bool = False, seed: int = 0, runner: Runner = run_serial, overrides: dict[str, Any] | None = None
) -> Report:
    c = experiment_config("label-noise", full, overrides)
    report = Report("label-noise", "Label-noise procedure (particles) against its expected dynamics (grid)")
    levels = c["label_noise"]
    grid_jobs = [
        Job(grid_run, {"lam": c["lam"], "cells": c["cells"], "T": c["T"], "s": s}, f"grid, s = {s:g}") for s in levels
    ]
    particle_jobs = [
        Job(
            particle_run,
            {"lam": c["lam"], "N": c["N"], "eta": c["eta"], "T": c["T"], "s": s, "seed": seed, "index": k},
            f"particles, s = {s:g}, run {k}",
        )
        for s in levels
        for k in range(c["seeds"])
    ]
    results = runner(grid_jobs + particle_jobs)
    rows: list[list[float]] = []
    curves: dict[float, dict[str, tuple[list[float], list[float]]]] = {}
    for i, s in enumerate(levels):
        g = results[i]
        runs = results[len(levels) + i * c["seeds"] : len(levels) + (i + 1) * c["seeds"]]
        dfs = [r["df_tail"] for r in runs]
        se = float(np.std(dfs, ddof=1) / math.sqrt(len(dfs)))
        rows.append([s, g["df"][-1], float(np.mean(dfs)), se, g["U"], float(np.mean([r["U_tail"] for r in runs]))])
        curves[s] = {"grid": (g["time"], g["df"]), "particles": (runs[-1]["time"], runs[-1]["df"])}
    report.table(
        f"At stationarity (T = {c['T']:g}); particles: N = {c['N']}, eta = {c['eta']}, {c['seeds']} seeds, "
        "second-half averages",
        ["s", "df grid (expected)", "df particles (procedure)", "s.e.", "U grid", "U particles"],
        rows,
    )
    base_gap = abs(rows[0][2] - rows[0][1])
    tol = [3 * r[3] + 2 * base_gap for r in rows]
    report.claim(
        "the procedure lowers df on the grid (df decreases with s)", bool(np.all(np.diff([r[1] for r in rows]) < 0))
    )
    report.claim(
        "the procedure lowers df with particles (df decreases with s)", bool(np.all(np.diff([r[2] for r in rows]) < 0))
    )
    report.claim(
        "particles and grid agree on df within 3 s.e. plus twice the s = 0 discrepancy ("
        + ", ".join(f"|{r[2] - r[1]:.3f}| <= {t:.3f}" for r, t in zip(rows, tol, strict=True))
        + ")",
        all(abs(r[2] - r[1]) <= t for r, t in zip(rows, tol, strict=True)),
    )
    report.data = {"config": c, "rows": rows}
    fig, ax = report.figure("df", figsize=(6.5, 4.5), constrained_layout=True)
    for i, (s, cv) in enumerate(curves.items()):
        ax.plot(*cv["grid"], color=f"C{i}", label=f"s = {s:g}, grid (expected)")
        ax.plot(*cv["particles"], color=f"C{i}", ls=":", alpha=0.7, label=f"s = {s:g}, particles (one seed)")
    ax.set_xlabel("t")
    ax.set_ylabel("df")
    ax.legend(fontsize=8)
    return report
