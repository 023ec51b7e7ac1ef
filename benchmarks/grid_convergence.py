"""Convergence of the p = 3 cross-check's grid reference: U at T in the cells and in the step, and observed orders.

The problem is ``mfld validate crosscheck``'s in p = 3 (``mfld.validation.problems``: tanh with bias, d = 2, n = 40,
lam = 0.05; the box [-6, 6]^3, the prior's Gaussian at t = 0, BDF2, T = 5), solved by
:func:`mfld.validation.checks.crosscheck.grid_reference` itself on a ladder of cells per axis (at the cross-check's
step) and of steps (at fixed cells). Each run is its own process, so that its peak memory (``ru_maxrss``) is its
own; the linear solver is the reference's (``auto``, to grid.solver_tol = 1e-10).

Orders: for three runs ``x_1 > x_2 > x_3`` of one ladder (x = h or eta) with ``U(x) = U* + C x^q``, q solves
``(U_1 - U_2) / (U_2 - U_3) = (x_1^q - x_2^q) / (x_2^q - x_3^q)``. ``U*`` is the Richardson limit of the last two
runs at the schemes' order 2, and the error of every run is its distance to ``U*`` (space and time errors are taken
one ladder at a time: the other's error is common to every run of the ladder and cancels in the differences). The
Richardson limit of every consecutive pair is printed too, with its distance to ``U*``: what two coarse runs give.

    python benchmarks/grid_convergence.py --out grid-convergence.json   # the default ladders
    python benchmarks/grid_convergence.py --cells --etas 0.1 0.05 0.025 --eta-cells 32   # steps only
    python benchmarks/grid_convergence.py --report grid-convergence.json   # the summary again, no runs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scipy.optimize import brentq

T = 5.0
HALF_WIDTH = 6.0


def one_run(cells: int, eta: float) -> dict[str, Any]:
    """U at T (and its mass and wall time) of the grid reference on ``cells`` per axis with step ``eta``."""
    from mfld.discretizations import loop
    from mfld.discretizations.grid import FiniteVolume
    from mfld.discretizations.mesh import Grid, gaussian_density
    from mfld.validation.checks.crosscheck import GRID_ETA, grid_reference
    from mfld.validation.problems import low_dim_functional

    if abs(T / eta - round(T / eta)) > 1e-9:  # the run would end on the first step past T, not at T
        raise SystemExit(f"eta = {eta} does not divide T = {T}; the ladder's steps must")
    F = low_dim_functional(3)
    started = time.perf_counter()
    if eta == GRID_ETA:
        grid, fv = grid_reference(F, 3, T, cells, eta)
    else:  # the reference's construction, at another step
        import numpy as np

        grid = Grid.box(HALF_WIDTH, cells, 3)
        m0 = gaussian_density(grid, np.zeros(3), np.eye(3) / F.problem.lam_w)
        fv = FiniteVolume(F, grid, m0, eta, "bdf2")
        loop.run(fv, until=T)
    seconds = time.perf_counter() - started
    mass = float(fv.density.sum() * grid.cell_volume)
    U = float(fv.fit().U)
    return {"cells": cells, "eta": eta, "U": U, "mass": mass, "steps": fv.step_count, "seconds": seconds}


def observed_order(x: list[float], U: list[float]) -> float:
    """q with ``(U_1 - U_2) / (U_2 - U_3) = (x_1^q - x_2^q) / (x_2^q - x_3^q)`` (nan when the differences do not
    shrink monotonically, where no power law fits)."""
    ratio = (U[0] - U[1]) / (U[1] - U[2])

    def f(q: float) -> float:
        return (x[0] ** q - x[1] ** q) / (x[1] ** q - x[2] ** q) - ratio

    try:
        return float(brentq(f, 0.05, 8.0))
    except ValueError:
        return math.nan


def ladder(rows: list[dict[str, Any]], key: str, order: float = 2.0) -> dict[str, Any]:
    """Observed orders of consecutive triples of a ladder (``key`` "h" or "eta", from coarse to fine); the Richardson
    limit of every consecutive pair at the scheme's ``order`` (2 in h, and in eta for BDF2), the last pair's as
    ``U*``; the same limit at the last triple's observed order (its distance says how well ``U*`` is known); and
    the error of every run against ``U*``. (At the last triple's own order the last two pairs' limits agree by
    construction: that order is the one that makes them agree.)"""
    x = [r[key] for r in rows]
    U = [r["U"] for r in rows]
    orders = [observed_order(x[i : i + 3], U[i : i + 3]) for i in range(len(rows) - 2)]

    def richardson(i: int, q: float) -> float:
        return U[i + 1] + (U[i + 1] - U[i]) / ((x[i] / x[i + 1]) ** q - 1.0)

    pairs = [richardson(i, order) for i in range(len(rows) - 1)]
    limit = pairs[-1]
    observed = orders[-1] if orders and math.isfinite(orders[-1]) else order
    return {
        "orders": orders,
        "order": order,
        "limit": limit,
        "limit_at_observed_order": richardson(len(rows) - 2, observed),
        "errors": [u - limit for u in U],
        "pair_limits": pairs,
        "pair_errors": [v - limit for v in pairs],
    }


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The ladders' orders, limits and errors (printed), from the runs of :func:`one_run`."""
    summary: dict[str, Any] = {}
    for kind, key in (("space", "h"), ("time", "eta")):
        if len(results[kind]) >= 3:
            summary[f"{kind}_ladder"] = fit = ladder(results[kind], key)
            orders = ", ".join(f"{q:.2f}" for q in fit["orders"])
            print(
                f"{kind}: observed orders {orders}; limit U* = {fit['limit']:.10f} (Richardson of the last pair at "
                f"order 2; at the observed order {fit['limit_at_observed_order']:.10f})"
            )
            for r, e in zip(results[kind], fit["errors"], strict=True):
                print(f"  {key} = {r[key]:.4g}: U - U* = {e:+.3e}")
            for r, v, e in zip(results[kind], fit["pair_limits"], fit["pair_errors"], strict=False):
                print(f"  Richardson from {key} = {r[key]:.4g} and the next: {v:.10f} ({e:+.1e} from U*)")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="*", default=[32, 48, 64, 96, 128])
    parser.add_argument("--etas", type=float, nargs="*", default=[0.1, 0.05, 0.025, 0.0125])
    parser.add_argument("--eta-cells", type=int, default=48, help="cells per axis of the step ladder")
    parser.add_argument("--space-eta", type=float, help="the step of the cells ladder (default: the cross-check's)")
    parser.add_argument("--out", type=Path, default=Path("grid-convergence.json"))
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # cells eta: one run, in this process
    parser.add_argument("--report", type=Path, help="summarise the runs of an earlier --out file again, run nothing")
    args = parser.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        summary = {**saved, **summarise({"space": saved["space"], "time": saved["time"]})}
        args.report.write_text(json.dumps(summary, indent=1))
        return
    if args.one:
        print(json.dumps(one_run(int(args.one[0]), float(args.one[1]))))
        return
    from mfld.validation.checks.crosscheck import GRID_ETA

    print(f"load: {os.getloadavg()[0]:.2f} (1 min); MFLD_THREADS={os.environ.get('MFLD_THREADS', '(unset)')}")
    results: dict[str, list[dict[str, Any]]] = {"space": [], "time": []}
    space_eta = GRID_ETA if args.space_eta is None else args.space_eta
    plan = [("space", c, space_eta) for c in args.cells] + [("time", args.eta_cells, e) for e in args.etas]
    for kind, cells, eta in plan:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--one", str(cells), str(eta)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"the run with {cells} cells and eta = {eta} failed (status {status})")
        row = json.loads(out)
        row["h"] = 2 * HALF_WIDTH / cells
        row["peak_MiB"] = usage.ru_maxrss / 1024
        results[kind].append(row)
        print(
            f"{kind:>5} {cells:>4}^3 eta {eta:<6g} U {row['U']:.10f} mass-1 {row['mass'] - 1:+.1e} "
            f"steps {row['steps']} {row['seconds']:.1f} s, peak {row['peak_MiB']:.0f} MiB",
            flush=True,
        )
    summary = {"T": T, "load": os.getloadavg()[0], **results, **summarise(results)}
    args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
