"""The mu* solver (the fixed point of the proximal Gibbs map) against an earlier version of itself, side by side.

Cases: p = 1, 2, 3 (tanh on d = 1, tanh with bias on d = 1 and 2; 256, 64^2 and 24^3 cells on [-8, 8]^p) for two
data sets, the generated single-index tanh target (n = 100) and issue 40's failing kind of data, a CSV file of
y = 2 relu(x_1) + 0.1 noise with x ~ Unif[-3, 3]^d (n = 200), each at lam = 0.002, 0.01, 0.05, 0.2 with
lam_a = lam_w = 0.25 (issue 40's case is "p=2 relu csv" at lam = 0.01). Each solver
runs at the configuration's defaults (tol 1e-12, max_iter 500, damping 0.5, memory 5) in this process, one
after the other; wall time is the best of ``--repeat``. The baseline is ``discretizations/stationary.py`` of a
git revision (``--baseline REV``), loaded from git into this process.

    python benchmarks/stationary_solver.py --baseline 5d24e52
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mfld.config import load_config
from mfld.config.assembly import build_functional, build_grid, build_problem
from mfld.discretizations import stationary

ROOT = Path(__file__).resolve().parents[1]


def baseline(rev: str) -> ModuleType:
    """``discretizations/stationary.py`` at ``rev``, as a module of the package (its relative imports resolve)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:discretizations/stationary.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    spec = importlib.util.spec_from_loader("mfld.discretizations._baseline_stationary", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "mfld.discretizations"
    sys.modules[spec.name] = module  # dataclasses look their module up while the source runs
    exec(compile(source, f"{rev}:discretizations/stationary.py", "exec"), module.__dict__)
    return module


def relu_csv(folder: str, d: int) -> str:
    """``y = 2 relu(x_1) + 0.1 noise``, ``x ~ Unif[-3, 3]^d``, n = 200, as a CSV file with a header."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (200, d))
    y = 2 * np.maximum(x[:, 0], 0) + 0.1 * rng.standard_normal(200)
    path = os.path.join(folder, f"relu{d}.csv")
    header = ",".join([*(f"x{k}" for k in range(d)), "y"])
    np.savetxt(path, np.c_[x, y], delimiter=",", header=header, comments="")
    return path


LAMS = (0.002, 0.01, 0.05, 0.2)


def cases(folder: str) -> list[tuple[str, float, list[str]]]:
    common = ['discretization="grid"', "grid.half_width=8.0", "model.lam_a=0.25", "model.lam_w=0.25"]
    index = ['data.target="single-index"', "data.n=100"]
    shapes = {
        "p=1 single-index": [*index, "data.d=1", 'model.feature="tanh"', "grid.cells=256"],
        "p=2 single-index": [*index, "data.d=1", "grid.cells=64"],
        "p=3 single-index": [*index, "data.d=2", "grid.cells=24"],
        "p=1 relu csv": [f'data.source="{relu_csv(folder, 1)}"', 'model.feature="tanh"', "grid.cells=256"],
        "p=2 relu csv": [f'data.source="{relu_csv(folder, 1)}"', "grid.cells=64"],
        "p=3 relu csv": [f'data.source="{relu_csv(folder, 2)}"', "grid.cells=24"],
    }
    return [(name, lam, [*common, *spec]) for name, spec in shapes.items() for lam in LAMS]


def timed(solve: Any, F: Any, grid: Any, repeat: int) -> tuple[Any, float]:
    best, result = float("inf"), None
    for _ in range(repeat):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            result = solve(F, grid)
            best = min(best, time.perf_counter() - t)
    return result, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="5d24e52", help="git revision of the solver to compare against")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    old = baseline(args.baseline)
    print(f"load: {os.getloadavg()[0]:.2f} (1 min); python {sys.version.split()[0]}; baseline {args.baseline}")
    print(
        "| case | lam | before: converged, evaluations, certificate, s | after: converged, steps / evaluations, "
        "certificate, s | after / before time |"
    )
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, lam, overrides in cases(folder):
            config = load_config(None, [*overrides, f"model.lam={lam}"])
            F = build_functional(config, build_problem(config))
            grid = build_grid(config, F)
            a, ta = timed(old.solve_stationary, F, grid, args.repeat)
            b, tb = timed(stationary.solve_stationary, F, grid, args.repeat)
            print(
                f"| {name} | {lam:g} | {'yes' if a.converged else 'NO'}, {a.iterations}, {a.certificate:.1e}, "
                f"{ta:.2f} | {'yes' if b.converged else 'NO'}, {b.iterations} / {b.evaluations}, "
                f"{b.certificate:.1e}, {tb:.2f} | {tb / ta:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
