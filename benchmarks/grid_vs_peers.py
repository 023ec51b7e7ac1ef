"""The linear Fokker-Planck (Ornstein-Uhlenbeck) problem solved by mfld and its peers.

    d_t m = lam Laplace(m) + div(m kappa w),   kappa = lam lam_w = 1,  lam = 0.1

on [-2.5, 2.5]^p from a Gaussian N(mean0, cov0) to t = 0.5, where the exact
solution is Gaussian. Each solver runs on its own grid of the stated size; the
error is max |m - m_exact| / max m_exact at t = 0.5 on that grid, the time is
wall time in this process, best of three (the first call of a JIT-compiled peer
is reported separately). A summary then sets each fplanck row against the
fastest mfld row with an error at most as large.

Then the nonlinear problem (two-timescale functional, tanh with bias: d = 1 so
p = 2, and d = 2 so p = 3; n = 50) is timed per implicit Euler step for each
``grid.linear_solver`` at 128^2, 256^2, 512^2, 64^3 and 128^3 cells, side by
side (the potential V_m, the same for all, is timed alone in its own column, best of three, beside
its bound: tanh of the n x cells pre-activations once, into a preallocated array, best of three),
with the iterations of the iterative solvers and each run's peak memory (tracemalloc, NumPy's
arrays, over the set-up and the untimed first step). The direct LU is skipped where its fill-in
makes it hopeless (3-D past 32^3, 2-D past 256^2).

Peers: fplanck (master equation, exact matrix exponential in time), py-pde
(finite differences, scipy's adaptive RK45), FiPy (finite volumes with
exponential convection, implicit Euler). A peer that is not installed is
skipped with the reason. Install them with ``pip install fplanck py-pde fipy``.

    python benchmarks/grid_vs_peers.py                 # both tables
    python benchmarks/grid_vs_peers.py --nonlinear 128 256 --cubes 64   # fewer sizes
"""

from __future__ import annotations

import functools
import math
import os
import time
import tracemalloc
import warnings
from collections.abc import Callable

import numpy as np

from mfld.discretizations.grid import FiniteVolume
from mfld.discretizations.implicit_solvers import LINEAR_SOLVERS
from mfld.discretizations.mesh import BoxWarning, Grid, gaussian_density
from mfld.discretizations.spectral import FourierSpectral
from mfld.model.datasets import make_dataset
from mfld.model.prior import PriorOnlyFunctional
from mfld.model.problem import Problem
from mfld.model.two_timescale import TwoTimescaleFunctional

LAM, LAM_W, T_END, L = 0.1, 10.0, 0.5, 2.5
KAPPA = LAM * LAM_W
MEAN0 = np.array([0.5, -0.3])
COV0 = np.array([[0.05, 0.02], [0.02, 0.08]])


def exact(points: np.ndarray, p: int, t: float) -> np.ndarray:
    mean = MEAN0[:p] * math.exp(-KAPPA * t)
    cov = COV0[:p, :p] * math.exp(-2 * KAPPA * t) + np.eye(p) * (1 - math.exp(-2 * KAPPA * t)) / LAM_W
    X = points - mean
    quad = np.einsum("ij,jk,ik->i", X, np.linalg.inv(cov), X)
    return np.exp(-0.5 * quad) / math.sqrt((2 * math.pi) ** p * np.linalg.det(cov))


def rel_error(m: np.ndarray, points: np.ndarray, p: int) -> float:
    ref = exact(points, p, T_END)
    return float(np.max(np.abs(m.ravel() - ref)) / np.max(ref))


def mfld_solver(cls, scheme: str | None, eta: float) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    def solve(p: int, n: int):
        F = PriorOnlyFunctional(Problem(np.zeros((2, p)), np.zeros(2), "tanh", LAM, 1.0, LAM_W))
        grid = Grid.box(L, n, p)
        m0 = gaussian_density(grid, MEAN0[:p], COV0[:p, :p])
        s = cls(F, grid, m0, eta, scheme) if scheme else cls(F, grid, m0, eta)
        for _ in range(int(round(T_END / eta))):
            s.step()
        return s.density, grid.centers()

    return solve


def fplanck_solver(p: int, n: int):
    import fplanck
    from scipy import constants

    if not hasattr(np, "product"):  # fplanck 0.2.2 calls np.product, removed in NumPy 2
        setattr(np, "product", np.prod)  # noqa: B010
    h = 2 * L / n
    sim = fplanck.fokker_planck(
        temperature=LAM / constants.k,
        drag=1.0,
        extent=[2 * L] * p,
        resolution=h,
        potential=lambda *w: 0.5 * KAPPA * sum(x * x for x in w),
        boundary=fplanck.boundary.reflecting,
    )
    P0 = np.linalg.inv(COV0[:p, :p])

    def initial(*w):
        X = np.stack([x - MEAN0[k] for k, x in enumerate(w)], axis=-1)
        return np.exp(-0.5 * np.einsum("...i,ij,...j->...", X, P0, X))

    prob = sim.propagate(initial, T_END)
    points = np.stack([g.ravel() for g in sim.grid], axis=1)
    return prob / h**p, points


def pypde_solver(p: int, n: int):
    import pde

    grid = pde.CartesianGrid([[-L, L]] * p, [n] * p)
    names = ["x", "y"][:p]
    drift = " + ".join(f"{v} * d_d{v}(m)" for v in names)
    eq = pde.PDE({"m": f"{LAM} * laplace(m) + {KAPPA} * ({drift} + {p} * m)"}, bc={"derivative": 0})
    points = grid.cell_coords.reshape(-1, p)
    state = pde.ScalarField(grid, exact_initial(points, p).reshape(grid.shape))
    out = eq.solve(state, t_range=T_END, solver="scipy", tracker=None)
    return out.data, points


def exact_initial(points: np.ndarray, p: int) -> np.ndarray:
    X = points - MEAN0[:p]
    quad = np.einsum("ij,jk,ik->i", X, np.linalg.inv(COV0[:p, :p]), X)
    return np.exp(-0.5 * quad) / math.sqrt((2 * math.pi) ** p * np.linalg.det(COV0[:p, :p]))


def fipy_solver(p: int, n: int, dt: float = 1e-3):
    import fipy

    h = 2 * L / n
    mesh = (fipy.Grid1D(nx=n, dx=h) if p == 1 else fipy.Grid2D(nx=n, ny=n, dx=h, dy=h)) + [[-L]] * p
    points = np.asarray(mesh.cellCenters).T
    m = fipy.CellVariable(mesh=mesh, value=exact_initial(points, p))
    velocity = -KAPPA * mesh.faceCenters  # the drift -grad V = -kappa w
    eq = fipy.TransientTerm() == fipy.DiffusionTerm(coeff=LAM) - fipy.ExponentialConvectionTerm(coeff=velocity)
    for _ in range(int(round(T_END / dt))):
        eq.solve(var=m, dt=dt)
    return np.asarray(m.value), points


def timed(
    fn: Callable[[], tuple[np.ndarray, np.ndarray]], repeat: int = 3
) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def linear_table() -> None:
    solvers: list[tuple[str, Callable[[int, int], tuple[np.ndarray, np.ndarray]], bool]] = [
        ("mfld FV implicit Euler, eta 1e-3", mfld_solver(FiniteVolume, "implicit-euler", 1e-3), False),
        ("mfld FV BDF2, eta 1e-2", mfld_solver(FiniteVolume, "bdf2", 1e-2), False),
        ("mfld spectral IMEX Euler, eta 1e-3", mfld_solver(FourierSpectral, "imex-euler", 1e-3), False),
        ("mfld spectral SBDF2, eta 1e-2", mfld_solver(FourierSpectral, "sbdf2", 1e-2), False),
        ("mfld spectral SBDF2, eta 5e-2", mfld_solver(FourierSpectral, "sbdf2", 5e-2), False),
        ("fplanck (expm in time)", fplanck_solver, False),
        ("py-pde (scipy RK45, adaptive)", pypde_solver, True),
        ("FiPy (implicit Euler, dt 1e-3)", fipy_solver, False),
    ]
    print(f"Ornstein-Uhlenbeck, lam = {LAM}, kappa = {KAPPA}, t = {T_END}, box [-{L}, {L}]^p")
    print(f"{'solver':<36} {'p':>2} {'cells':>9} {'rel. error':>11} {'wall s':>8}  note")
    results: list[tuple[str, int, str, float, float]] = []
    for p, sizes in ((1, (100, 400)), (2, (32, 64))):
        for name, solve, jit in solvers:
            for n in sizes:
                cells = f"{n}" if p == 1 else f"{n}^2"
                if name.startswith("mfld spectral"):
                    cells_n = n // 4 if p == 1 else n // 2  # spectral needs far fewer unknowns
                    cells = f"{cells_n}" if p == 1 else f"{cells_n}^2"
                else:
                    cells_n = n
                try:
                    note = ""
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", BoxWarning)
                        run = functools.partial(solve, p, cells_n)
                        if jit:
                            _, first = timed(run)
                            note = f"first call {first:.2f} s (JIT)"
                        (m, pts), wall = timed(run)
                    if any(issubclass(w.category, BoxWarning) for w in caught):
                        note += " undershoot reached the box edge (BoxWarning)"
                    err = rel_error(m, pts, p)
                    results.append((name, p, cells, err, wall))
                    print(f"{name:<36} {p:>2} {cells:>9} {err:>11.2e} {wall:>8.3f}  {note}")
                except ImportError as e:
                    print(f"{name:<36} {p:>2} {cells:>9} {'skipped':>11} {'':>8}  not installed ({e.name})")
                except Exception as e:  # a peer failing is reported, not fatal
                    print(f"{name:<36} {p:>2} {cells:>9} {'failed':>11} {'':>8}  {type(e).__name__}: {e}")
    summary(results)


def summary(results: list[tuple[str, int, str, float, float]]) -> None:
    """Each fplanck row against the fastest mfld row of the same p whose error is no larger."""
    print("\nAt equal or lower error: fplanck's time / the fastest mfld solver's time")
    for name, p, cells, err, wall in results:
        if not name.startswith("fplanck"):
            continue
        better = [r for r in results if r[0].startswith("mfld") and r[1] == p and r[3] <= err]
        if not better:
            print(f"  p = {p}, fplanck {cells} (error {err:.2e}): no mfld row as accurate")
            continue
        best = min(better, key=lambda r: r[4])
        print(
            f"  p = {p}, fplanck {cells} (error {err:.2e}, {wall:.3f} s): {best[0]} {best[2]} (error "
            f"{best[3]:.2e}, {best[4]:.4f} s), {wall / best[4]:.0f}x faster"
        )


def _nonlinear_functional(p: int) -> TwoTimescaleFunctional:
    ds = make_dataset("single-index", d=p - 1, n=50, n_test=10, seed=0)
    return TwoTimescaleFunctional(Problem.from_dataset(ds, "tanh_bias", 0.05, 1.0, 1.0))


def nonlinear_table(
    squares: list[int],
    cubes: list[int],
    steps: int = 3,
    solvers: tuple[str, ...] = ("direct", "splitting", "krylov", "cg"),
) -> None:
    print(
        "\nNonlinear problem (two-timescale, tanh_bias, n = 50; p = 2: d = 1, box [-6, 6]^2; p = 3: d = 2, "
        "box [-5, 5]^3), implicit Euler, eta = 0.5, grid.solver_tol = 1e-10, seconds per step (after one untimed "
        f"step; mean of {steps}), Krylov iterations of the last step, peak traced memory of the set-up and first "
        "step (MiB)"
    )
    print(f"load: {os.getloadavg()[0]:.2f} (1 min); MFLD_THREADS={os.environ.get('MFLD_THREADS', '(unset)')}")
    print(f"{'cells':>9} {'V_m s':>8} {'tanh s':>8} " + " ".join(f"{s:>20}" for s in solvers))
    for p, sizes in ((2, squares), (3, cubes)):
        F = _nonlinear_functional(p)
        for n in sizes:
            grid = Grid.box(6.0 if p == 2 else 5.0, n, p)
            m0 = gaussian_density(grid, np.zeros(p), np.eye(p))
            row = []
            for name in solvers:
                if name == "direct" and (p == 3 and n > 32 or n > 256):
                    row.append(f"{'(fill-in)':>20}")
                    continue
                tracemalloc.start()  # over the set-up and the untimed step only: it slows every allocation
                fv = FiniteVolume(F, grid, m0, 0.5, linear_solver=name)
                fv.step()
                peak = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
                t0 = time.perf_counter()
                for _ in range(steps):
                    fv.step()
                seconds = (time.perf_counter() - t0) / steps
                iterations = f"{fv.solver.iterations} it" if name in ("krylov", "cg") else ""
                row.append(f"{seconds:>8.3f} {iterations:>5} {peak:>5.0f}")
            potential = math.inf
            for _ in range(3):
                fv._fit = None
                t0 = time.perf_counter()
                fv.potential()
                potential = min(potential, time.perf_counter() - t0)
            bound = "-"
            if grid.size <= 2**22:  # the bound's n x cells scratch array beside the features
                H = fv.features[1]
                scratch = np.empty_like(H)
                best = math.inf
                for _ in range(3):
                    t0 = time.perf_counter()
                    np.tanh(H, out=scratch)
                    best = min(best, time.perf_counter() - t0)
                bound = f"{best:.3f}"
                del scratch, H
            cells = f"{n}^{p}"
            print(f"{cells:>9} {potential:>8.3f} {bound:>8} " + " ".join(row), flush=True)
            del fv


def stiff_table(sizes: tuple[tuple[int, int], ...] = ((2, 256), (3, 64))) -> None:
    """One implicit step far from equilibrium, where a splitting sweep is a poor preconditioner: the prior's
    Gaussian moved to (0.5, ...) in ``V = |w|^2 / 2 + sin(3 w_1)`` on [-4, 4]^p, lam = 0.05, to 1e-10."""
    print("\nOne stiff step (V = |w|^2/2 + sin(3 w_1) on [-4, 4]^p, lam = 0.05, m = N(0.5, I)), to 1e-10")
    for p, n in sizes:
        grid = Grid.box(4.0, n, p)
        c = grid.centers()
        V = 0.5 * np.sum(c * c, axis=1) + np.sin(3 * c[:, 0])
        r = gaussian_density(grid, np.full(p, 0.5), np.eye(p))
        for dt in (0.5, 5.0):
            for name in ("direct", "krylov", "cg"):
                if name == "direct" and p == 3:
                    continue
                solver = LINEAR_SOLVERS[name](grid, 0.05, 1e-10)
                t0 = time.perf_counter()
                try:
                    solver.solve(V, dt, r)
                    outcome = f"{time.perf_counter() - t0:.3f} s, {solver.iterations} iterations"
                except FloatingPointError:
                    outcome = f"no convergence in {time.perf_counter() - t0:.1f} s"
                print(f"  {n}^{p} dt {dt:<4} {name:>7}: {outcome}", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nonlinear", type=int, nargs="*", default=[128, 256, 512], help="2-D cells per axis")
    parser.add_argument("--cubes", type=int, nargs="*", default=[64, 128], help="3-D cells per axis")
    parser.add_argument("--no-linear", action="store_true", help="skip the Ornstein-Uhlenbeck table")
    parser.add_argument("--stiff", action="store_true", help="also time one stiff step per solver")
    parser.add_argument("--steps", type=int, default=3, help="timed nonlinear steps per solver (after one untimed)")
    parser.add_argument("--solvers", nargs="+", default=["direct", "splitting", "krylov", "cg"])
    args = parser.parse_args()
    if not args.no_linear:
        linear_table()
    nonlinear_table(args.nonlinear, args.cubes, args.steps, tuple(args.solvers))
    if args.stiff:
        stiff_table()
