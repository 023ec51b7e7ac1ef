"""The measurements behind the README's and docs/theory.md's numerical statements, in one invocation.

* ``pcg``: along the shipped ``paper`` run (n = 1000, d = 15, N = 2000, eta = 0.2, 10,000 steps,
  ``particles.solve = "auto"``, which is pcg there, never restarted, as a run), every ``--every``
  steps: the relative drift error ``||b_pcg - b_exact|| / ||b_exact||``
  against the Cholesky drift at the same positions, ``cond(K)`` of the dual system
  ``K = S + n lam_a_bar I``, and, from the exact fit, the degrees of freedom and the kernel
  alignment, so the run's df and alignment from the prior are read off the same trajectory.
* ``grid``: the ``grid-1d`` problem for 400 steps with each finite-volume scheme, every step
  recorded: the largest ``|mass - 1|``, the smallest density, and the largest increase of
  ``Obj`` from one step to the next (positive: Obj rose).

Writes ``--out`` (JSON) and prints a summary. Run it with nothing else on the machine.

    python benchmarks/doc_claims.py --out docs/measurements/doc_claims.json
    python benchmarks/doc_claims.py --steps 2000           # a shorter paper run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from mfld.config import load_config
from mfld.discretizations import loop
from mfld.model.observables import degrees_of_freedom, kernel_alignment
from mfld.model.two_timescale import TwoTimescaleFunctional
from mfld.solver import build
from mfld.solver.threads import blas_threads


class DriftCheck:
    """Every ``every`` steps, the system's (pcg) drift against the exact one at the same positions."""

    def __init__(self, exact: TwoTimescaleFunctional, every: int) -> None:
        self.exact, self.every, self.rows = exact, every, []

    def _check(self, system) -> None:
        W, q = system.measure()
        fit, fit_ex = system.fit(), self.exact.fit(W, q)
        b, b_ex = system.functional.grad_potential(fit), self.exact.grad_potential(fit_ex)
        K = fit_ex.gram + self.exact.ridge * np.eye(fit_ex.gram.shape[0]) if fit_ex.gram is not None else None
        self.rows.append(
            {
                "step": system.step_count,
                "drift_error": float(np.linalg.norm(b - b_ex) / np.linalg.norm(b_ex)),
                "cond_K": float(np.linalg.cond(K)) if K is not None else None,
                "degrees_of_freedom": degrees_of_freedom(self.exact, fit_ex),
                "kernel_alignment": kernel_alignment(self.exact, fit_ex),
                "method": "pcg" if fit.gram is None else "exact",
            }
        )

    def start(self, system) -> None:
        self._check(system)

    def observe(self, system) -> None:
        if system.step_count % self.every == 0:
            self._check(system)

    def finish(self, system, interrupted: bool) -> None:
        pass


def pcg_along_the_paper_run(steps: int, every: int) -> dict:
    config = load_config("paper", [f"time.steps={steps}"])
    problem = build.build_problem(config)
    system = build.build_system(config, problem)
    check = DriftCheck(TwoTimescaleFunctional(problem), every)
    t0 = time.perf_counter()
    with threadpool_limits(limits=blas_threads(config)):
        loop.run(system, steps, [check])
    rows = check.rows
    pcg = [r for r in rows if r["method"] == "pcg"]
    errors = [r["drift_error"] for r in pcg]
    return {
        "config": "paper",
        "steps": steps,
        "every": every,
        "seconds": time.perf_counter() - t0,
        "solve_tol": config["particles"]["solve_tol"],
        "rows": rows,
        "drift_error_min": min(errors) if errors else None,
        "drift_error_max": max(errors) if errors else None,
        "cond_K_max": max(r["cond_K"] for r in rows if r["cond_K"] is not None),
    }


def grid_schemes(steps: int) -> dict:
    out = {}
    for scheme in ("implicit-euler", "bdf2"):
        config = load_config("grid-1d", [f'grid.scheme="{scheme}"', f"time.steps={steps}"])
        problem = build.build_problem(config)
        system = build.build_system(config, problem)
        rec = loop.Recorder(build.metrics_of, 1)
        loop.run(system, steps, [rec])
        s = rec.series(["mass", "min_density", "objective"])
        out[scheme] = {
            "steps": steps,
            "mass_error_max": float(np.max(np.abs(s["mass"] - 1.0))),
            "min_density": float(np.min(s["min_density"])),
            "objective_increase_max": float(np.max(np.diff(s["objective"]))),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10000, help="steps of the paper run (default: its 10,000)")
    ap.add_argument("--every", type=int, default=500, help="steps between drift checks")
    ap.add_argument("--out", default="doc_claims.json")
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    result = {
        "machine": f"{platform.node()}: {platform.machine()}, {os.cpu_count()} cores",
        "load_before": float(load),
        "grid": grid_schemes(400),
        "pcg": pcg_along_the_paper_run(args.steps, args.every),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    p = result["pcg"]
    first, last = p["rows"][0], p["rows"][-1]
    peak = max(p["rows"], key=lambda r: r["kernel_alignment"])
    print(
        f"pcg drift error along {p['steps']} steps: {p['drift_error_min']:.2g} to {p['drift_error_max']:.2g} "
        f"(tol {p['solve_tol']:g}, cond(K) up to {p['cond_K_max']:.3g}, bound cond(K) tol "
        f"{p['cond_K_max'] * p['solve_tol']:.2g})"
    )
    print(
        f"df {first['degrees_of_freedom']:.1f} -> {last['degrees_of_freedom']:.1f}; alignment "
        f"{first['kernel_alignment']:.4f} -> {last['kernel_alignment']:.4f} (peak {peak['kernel_alignment']:.4f} "
        f"at step {peak['step']})"
    )
    for name, g in result["grid"].items():
        print(
            f"grid-1d {name}, {g['steps']} steps: max |mass - 1| {g['mass_error_max']:.2g}, min density "
            f"{g['min_density']:.3g}, largest rise of Obj {g['objective_increase_max']:.2g}"
        )


if __name__ == "__main__":
    main()
