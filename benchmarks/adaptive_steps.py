"""Adaptive time steps against fixed ones: steps and wall time to the gap 1e-10, and the fitted linear rate.

Problems: the shipped grid-1d and grid-2d configurations, and issue 40's failing case (a CSV file of
y = 2 relu(x_1) + 0.1 noise, n = 200, tanh with bias, p = 2, 64^2 cells on [-8, 8]^2, lam = 0.01,
lam_a = lam_w = 0.25). Every run starts from the prior, solves for mu* once, and steps the finite volumes
until Obj(m_t) - Obj(mu*) < 1e-10; the rate is the slope of log(gap) on 1e-10 < gap < 1e-4
(``mfld.validation.checks.rates.fit_rate``). Rows:

* ``fixed <scheme> eta``: a ladder of fixed steps, implicit Euler and BDF2;
* ``adaptive tol``: ``time.adaptive = true`` at a ladder of tolerances (``time.eta = 0.01``, ``time.eta_max = 100``);
* the reference rate is that of fixed steps as eta -> 0: Richardson's extrapolation of implicit Euler's rates at
  the two smallest steps of its ladder (its rate error is O(eta)); its distance from BDF2's smallest-step rate is
  printed as the reference's own uncertainty.

"Equal accuracy" is a rate within 1 % of the reference; the summary line compares the fewest steps each kind
needs for it. One process, one BLAS thread per process unless ``MFLD_THREADS`` says otherwise; the load is
printed first.

    python benchmarks/adaptive_steps.py                # all three problems
    python benchmarks/adaptive_steps.py --only grid-1d
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from stationary_solver import relu_csv  # issue 40's data file, as the mu* benchmark writes it (this folder)

from mfld.config import load_config
from mfld.config.assembly import build_functional, build_grid, build_problem, build_system, stationary
from mfld.validation.checks.rates import fit_rate

ROOT = Path(__file__).resolve().parents[1]
GAP = 1e-10


Problem = tuple[str | None, list[str], list[float], list[float], list[float], float]


def problems(folder: str) -> dict[str, Problem]:
    """name -> (configuration file, overrides, implicit-Euler etas, BDF2 etas, tolerances, end time): a run that
    has not reached the gap at the end time (BDF2 caught in a two-step cycle at a large step) is reported so."""
    configs = ROOT / "data" / "configs"
    failing = [
        'discretization="grid"',
        f'data.source="{relu_csv(folder, 1)}"',
        'model.feature="tanh_bias"',
        "model.lam=0.01",
        "model.lam_a=0.25",
        "model.lam_w=0.25",
        "grid.half_width=8.0",
        "grid.cells=64",
    ]
    tols = [0.04, 0.02, 0.01]
    return {
        "grid-1d": (str(configs / "grid-1d.toml"), [], [0.4, 0.2, 0.1, 0.05], [2.0, 1.0, 0.5, 0.25], tols, 1e3),
        "grid-2d": (str(configs / "grid-2d.toml"), [], [0.4, 0.2, 0.1, 0.05], [2.0, 1.0, 0.5, 0.25], tols, 1e3),
        # Twenty times slower than the others (rate 0.013): every step of its ladders is larger.
        "issue-40 case": (None, failing, [3.2, 1.6, 0.8, 0.4], [16.0, 8.0, 4.0, 2.0], tols, 1e4),
    }


def to_gap(config: Any, problem: Any, functional: Any, reference: float, t_max: float) -> dict[str, float]:
    """Steps, wall time, end time and fitted rate of one run until the gap falls below :data:`GAP`."""
    system: Any = build_system(config, problem, functional=functional, reference_objective=reference)
    times, gaps = [], []
    started = time.perf_counter()
    while system.time < t_max:
        try:
            system.step()
        except FloatingPointError as e:  # bdf2's negative density at a large step: a row that says so
            print(f"    failed: {e}", file=sys.stderr)
            nan = float("nan")
            return {"steps": system.step_count, "wall": time.perf_counter() - started, "t": nan, "rate": nan}
        gap = system.diagnostics()["gap"]
        times.append(system.time)
        gaps.append(gap)
        if gap < GAP:
            break
    wall = time.perf_counter() - started
    if gaps[-1] >= GAP:
        print(f"    stalled: the gap is {gaps[-2]:.3g}, {gaps[-1]:.3g} at t = {system.time:g}", file=sys.stderr)
    rate = fit_rate(np.array(times), np.array(gaps), lo=GAP)[0] if gaps[-1] < GAP else float("nan")
    rejected = getattr(getattr(system, "controller", None), "rejected", 0)
    return {"steps": system.step_count, "wall": wall, "t": system.time, "rate": rate, "rejected": rejected}


def run_problem(name: str, spec: Problem) -> None:
    path, overrides, ie_etas, bdf2_etas, tols, t_max = spec
    base = [*overrides, "grid.gap=true", 'grid.linear_solver="auto"']
    config = load_config(path, base)
    problem = build_problem(config)
    functional = build_functional(config, problem)
    grid = build_grid(config, functional)
    started = time.perf_counter()
    reference = stationary(config, functional, grid, verbose=False).objective
    print(f"\n### {name}: {grid.size} cells, mu* in {time.perf_counter() - started:.1f} s\n", flush=True)
    rows: list[tuple[str, dict[str, float]]] = []
    for scheme, etas in (("implicit-euler", ie_etas), ("bdf2", bdf2_etas)):
        for eta in etas:
            c = load_config(path, [*base, f'grid.scheme="{scheme}"', f"time.eta={eta}"])
            rows.append((f"fixed {scheme} eta = {eta:g}", to_gap(c, problem, functional, reference, t_max)))
            print(f"  {rows[-1][0]}: {rows[-1][1]}", file=sys.stderr, flush=True)
    for tol in tols:
        c = load_config(path, [*base, "time.adaptive=true", f"time.tol={tol}", "time.eta=0.01", "time.eta_max=100"])
        rows.append((f"adaptive tol = {tol:g}", to_gap(c, problem, functional, reference, t_max)))
        print(f"  {rows[-1][0]}: {rows[-1][1]}", file=sys.stderr, flush=True)
    ie = [r for label, r in rows if label.startswith("fixed implicit-euler")]
    exact = 2 * ie[-1]["rate"] - ie[-2]["rate"]
    bdf2_small = [r for label, r in rows if label.startswith("fixed bdf2")][-1]["rate"]
    print(
        f"reference rate (implicit Euler, eta -> 0 by Richardson): {exact:.6g}; BDF2 at its smallest step: "
        f"{bdf2_small:.6g} (difference {abs(bdf2_small / exact - 1):.1e})\n"
    )
    print("| run | steps | rejected | seconds | t at gap 1e-10 | rate | rate error |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows:
        print(
            f"| {label} | {r['steps']} | {r.get('rejected', 0)} | {r['wall']:.2f} | {r['t']:.1f} | {r['rate']:.5g} | "
            f"{r['rate'] / exact - 1:+.2%} |"
        )
    within = {
        kind: [r for label, r in rows if label.startswith(kind) and abs(r["rate"] / exact - 1) <= 0.01]
        for kind in ("fixed implicit-euler", "fixed bdf2", "adaptive")
    }
    best = {kind: min(rs, key=lambda r: r["steps"]) if rs else None for kind, rs in within.items()}
    parts = [
        f"{kind}: {b['steps']} steps, {b['wall']:.2f} s" if b else f"{kind}: none of the ladder"
        for kind, b in best.items()
    ]
    print(f"\nfewest steps with the rate within 1 %: {'; '.join(parts)}")
    # At the adaptive runs' own accuracy: the fixed steps that would give the same rate error, from each fixed
    # ladder's smallest step and its order (error ~ eta for implicit Euler, eta^2 for BDF2): extrapolated.
    for label, r in rows:
        if not label.startswith("adaptive") or not np.isfinite(r["rate"]):
            continue
        error = max(abs(r["rate"] / exact - 1), 1e-6)
        needed = []
        for kind, order in (("fixed implicit-euler", 1), ("fixed bdf2", 2)):
            ladder = [(float(lab.rsplit("= ", 1)[1]), q) for lab, q in rows if lab.startswith(kind)]
            eta, q = min(ladder)
            base = abs(q["rate"] / exact - 1)
            steps = q["steps"] * eta / (eta * (error / base) ** (1 / order)) if base > 0 else float("nan")
            needed.append(f"{kind} about {steps:.0f}")
        print(f"{label}: rate error {error:.1e} in {r['steps']} steps; the same error needs {', '.join(needed)} steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run one problem (grid-1d, grid-2d, issue-40 case)")
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} (1 min); python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, spec in problems(folder).items():
            if args.only in (None, name):
                run_problem(name, spec)


if __name__ == "__main__":
    main()
