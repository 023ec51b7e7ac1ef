"""Work-precision of the finite volumes: the error at T against wall time, per scheme x linear solver x step x grid.

Schemes: fixed implicit Euler and fixed BDF2 on a ladder of steps, and adaptive steps (``time.adaptive``:
implicit Euler doubled and extrapolated, second order) on a ladder of tolerances; each with every linear solver
(``direct`` in p <= 2 only: its fill-in in 3-D), so adaptive + ``splitting`` is the second-order path at the
splitting's per-solve cost. Problems:

* ``ou``: Ornstein-Uhlenbeck in p = 2 (U = 0; benchmarks/grid_vs_peers.py's problem), whose solution is
  Gaussian at every T: the error is the L1 distance to the exact density at the cell centres (space and time),
  and the grid's own floor is printed;
* ``p2``, ``p3``: the cross-check problems (``mfld.validation.problems``, T = 5). Errors: ``L1``, the L1 distance
  of the density to the same grid's reference (BDF2, ``direct`` or ``krylov`` at solver_tol 1e-12, a step 40
  times below the ladder's smallest: the time error alone), and ``|dU|``, the distance of U at T to the finest
  grid's reference (time and space).

One curve per scheme x solver x grid in the figure (``--out``, default ``grid_work_precision.png``); the table
has every run. One process; run it with nothing else on the machine (the load is printed).

    python benchmarks/grid_work_precision.py --problems ou p2
    python benchmarks/grid_work_precision.py --problems p3 --out p3.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from grid_vs_peers import COV0, LAM, LAM_W, MEAN0, exact  # the OU problem and its solution (this folder)

from mfld.discretizations import loop
from mfld.discretizations.adaptive import StepControl
from mfld.discretizations.grid import FiniteVolume
from mfld.discretizations.mesh import Grid, gaussian_density
from mfld.model.prior import PriorOnlyFunctional
from mfld.model.problem import Problem
from mfld.validation.problems import low_dim_functional


def run(
    F: Any, grid: Grid, m0: np.ndarray, T: float, scheme: str, solver: str, step: float, tol: float = 1e-10
) -> tuple[np.ndarray, float, int, float]:
    """The density at T, U at T, steps and seconds of one run (``scheme`` "adaptive": ``step`` is time.tol)."""
    adaptive = scheme == "adaptive"
    kw: dict[str, Any] = {"control": StepControl(step, 10.0)} if adaptive else {}
    fv = FiniteVolume(
        F, grid, m0, 1e-3 if adaptive else step, "implicit-euler" if adaptive else scheme, (), solver, tol, **kw
    )
    started = time.perf_counter()
    loop.run(fv, until=T)
    seconds = time.perf_counter() - started
    return fv.density, float(fv.fit().U), fv.step_count, seconds


def problem(name: str) -> tuple[Any, list[tuple[Grid, np.ndarray]], float, Callable[[Grid], np.ndarray] | None]:
    """The functional, its grids with their initial densities, T, and the exact density at T (OU) or None."""
    if name == "ou":
        F = PriorOnlyFunctional(Problem(np.zeros((2, 2)), np.zeros(2), "tanh", LAM, 1.0, LAM_W))
        grids = [Grid.box(2.5, n, 2) for n in (48, 96)]

        def exact_at_T(g: Grid) -> np.ndarray:
            return exact(g.centers(), 2, 0.5).reshape(g.shape)

        return F, [(g, gaussian_density(g, MEAN0, COV0)) for g in grids], 0.5, exact_at_T
    p = int(name[1])
    F = low_dim_functional(p)
    cells = (48, 80) if p == 2 else (20, 28)
    grids = [Grid.box(6.0, n, p) for n in cells]
    return F, [(g, gaussian_density(g, np.zeros(p), np.eye(p))) for g in grids], 5.0, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=["ou", "p2"], choices=["ou", "p2", "p3"])
    parser.add_argument("--out", default="grid_work_precision.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warnings.simplefilter("ignore")
    print(f"load: {os.getloadavg()[0]:.2f} (1 min); python {sys.version.split()[0]}")
    fig, axes = plt.subplots(1, len(args.problems), figsize=(6.5 * len(args.problems), 5), squeeze=False)
    for ax, name in zip(axes[0], args.problems, strict=True):
        F, grids, T, exact = problem(name)
        etas = [T / 10, T / 20, T / 40, T / 80]
        tols = [0.04, 0.02, 0.01, 0.005]
        solvers = ["direct", "splitting", "krylov", "cg"] if F.dim <= 2 else ["splitting", "krylov", "cg"]
        refs: dict[int, tuple[np.ndarray, float]] = {}
        for k, (grid, m0) in enumerate(grids):
            if exact is None:
                density, U, _, seconds = run(F, grid, m0, T, "bdf2", solvers[-1], etas[-1] / 40, tol=1e-12)
                refs[k] = (density, U)
                print(f"{name} {grid.shape}: reference in {seconds:.1f} s, U(T) = {U:.12g}", flush=True)
            else:
                floor = float(np.sum(np.abs(exact(grid) - run(F, grid, m0, T, "bdf2", "direct", T / 4000)[0])))
                print(f"{name} {grid.shape}: space floor of the L1 error {floor * grid.cell_volume:.2e}")
        U_ref = refs[len(grids) - 1][1] if refs else 0.0
        print(f"\n### {name}, T = {T:g}\n")
        print("| grid | scheme | solver | eta or tol | steps | seconds | L1 error | abs dU |")
        print("|---|---|---|---|---|---|---|---|")
        for k, (grid, m0) in enumerate(grids):
            target = exact(grid) if exact is not None else refs[k][0]
            for scheme, ladder in (("implicit-euler", etas), ("bdf2", etas), ("adaptive", tols)):
                for solver in solvers:
                    curve = []
                    for step in ladder:
                        try:
                            density, U, steps, seconds = run(F, grid, m0, T, scheme, solver, step)
                        except FloatingPointError as e:
                            print(f"| {grid.shape} | {scheme} | {solver} | {step:g} | failed: {e} |||")
                            continue
                        l1 = float(np.sum(np.abs(density - target))) * grid.cell_volume
                        dU = abs(U - U_ref) if exact is None else float("nan")
                        curve.append((seconds, l1))
                        print(
                            f"| {'x'.join(map(str, grid.shape))} | {scheme} | {solver} | {step:g} | {steps} | "
                            f"{seconds:.3f} | {l1:.2e} | {dU:.2e} |",
                            flush=True,
                        )
                    if curve:  # colour: the solver; line: the scheme; marker: the grid
                        ax.loglog(
                            *zip(*curve, strict=True),
                            {"implicit-euler": ":", "bdf2": "--", "adaptive": "-"}[scheme],
                            color={"direct": "C0", "splitting": "C1", "krylov": "C2", "cg": "C3"}[solver],
                            marker="os^"[k],
                            ms=3,
                            label=f"{scheme}, {solver}, {'x'.join(map(str, grid.shape))}",
                        )
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("L1 error of the density at T" + (" (exact)" if exact is not None else " (time error)"))
        ax.set_title(f"{name}: work-precision")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"\nfigure: {args.out}")


if __name__ == "__main__":
    main()
