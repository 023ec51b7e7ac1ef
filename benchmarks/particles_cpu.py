"""Particle MFLD on the CPU: a plain NumPy step, mfld with the exact Cholesky solve and mfld with PCG, side by side.

The plain step is what a user would write from docs/theory.md §2: the whole n x N
feature matrix, ``np.linalg.solve`` on the n x n system, the drift in one expression.
Every method runs the same trajectory (same start, same noise, one step after the other,
so that PCG's warm start and preconditioner see a real run). The first ``warmup`` steps
are not timed (PCG's first solve is exact and factors the preconditioner); the next
``steps`` are. Peak memory is ``tracemalloc``'s (NumPy reports its allocations to it).
"drift err" is ``||b - b_exact|| / ||b_exact||`` of the method's last drift against the
exact drift at the same positions; "pos diff" the largest difference of the final
positions from the cholesky trajectory.

    python benchmarks/particles_cpu.py                 # paper size, N = 10^5, and n = 4096, N = 65536, d = 64
    python benchmarks/particles_cpu.py --only paper    # one row
    MFLD_THREADS=1 python benchmarks/particles_cpu.py  # as one MPI rank on a shared node would run

Run it with nothing else on the machine: two processes whose BLAS pools each take every
core slow each other several-fold.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from mfld.discretizations.particles import euler_maruyama
from mfld.model.datasets import make_dataset
from mfld.model.functional import GradientDrift
from mfld.model.problem import Problem
from mfld.model.two_timescale import DualSolve, TwoTimescaleFunctional

LAM, LAM_A, LAM_W, ETA = 0.004, 0.25, 0.25, 0.2


@dataclass(frozen=True)
class Size:
    name: str
    n: int
    d: int
    N: int
    warmup: int
    steps: int
    budget_mb: int


SIZES = (
    Size("paper", 1000, 15, 2000, 5, 40, 512),
    Size("N=1e5", 1000, 15, 100_000, 2, 4, 4096),
    Size("n=4096", 4096, 64, 65536, 1, 2, 8192),
)


def plain_drift(W: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """The drift ``-grad V_mu(w_i)`` written directly from the formulas (the whole n x N features)."""
    n, N = X.shape[0], W.shape[0]
    lam_a_bar, lam_w_bar = LAM * LAM_A, LAM * LAM_W
    Xa = np.hstack([X, np.ones((n, 1))])
    H = np.tanh(Xa @ W.T)
    S = H @ H.T / N
    c = np.linalg.solve(S + n * lam_a_bar * np.eye(n), Y)
    a = H.T @ c
    return lam_a_bar * ((1 - H**2) * c * a.T).T @ Xa - lam_w_bar * W


def plain_step(W: np.ndarray, X: np.ndarray, Y: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """One Euler-Maruyama step written directly from the formulas."""
    return W + ETA * plain_drift(W, X, Y) + math.sqrt(2 * ETA * LAM) * xi


def trajectory(step, W0: np.ndarray, noise: list[np.ndarray], warmup: int) -> tuple[np.ndarray, float, float]:
    """Run ``step`` through the noise; time the steps after ``warmup``; peak memory of the timed part."""
    W = W0
    for xi in noise[:warmup]:
        W = step(W, xi)
    tracemalloc.start()
    t0 = time.perf_counter()
    for xi in noise[warmup:]:
        W = step(W, xi)
    elapsed = (time.perf_counter() - t0) / max(1, len(noise) - warmup)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return W, elapsed, peak


def row(size: Size, with_plain: bool) -> list[str]:
    ds = make_dataset("x1x2", d=size.d, n=size.n, n_test=10, seed=0)
    pb = Problem.from_dataset(ds, "tanh_bias", LAM, LAM_A, LAM_W)
    rng = np.random.default_rng(0)
    W0 = pb.sample_prior(size.N, rng)
    noise = [rng.standard_normal(W0.shape) for _ in range(size.warmup + size.steps)]
    q = np.full(size.N, 1.0 / size.N)
    budget = size.budget_mb * 2**20
    exact = TwoTimescaleFunctional(pb, budget, solve=DualSolve("cholesky"))
    lines, results = [], {}
    methods = ["plain", "cholesky", "pcg"] if with_plain else ["cholesky", "pcg"]
    for method in methods:
        if method == "plain":

            def step(W, xi):
                return plain_step(W, ds.X, ds.Y, xi)

            F = None
        else:
            F = TwoTimescaleFunctional(pb, budget, solve=DualSolve(method))
            drift = GradientDrift(F)

            def step(W, xi, drift=drift):
                return euler_maruyama(W, q, drift, ETA, LAM, xi, 1)

        W, t, peak = trajectory(step, W0, noise, size.warmup)
        results[method] = W
        err = its = "-"
        if F is not None:
            b = F.grad_potential(F.fit(W, q))
            b_exact = exact.grad_potential(exact.fit(W, q))
            err = f"{np.linalg.norm(b - b_exact) / np.linalg.norm(b_exact):.1e}"
            timed = list(F.iterations)[-size.steps :]
            its = f"{np.mean(timed):.1f}" if timed else "-"
        lines.append((method, t, peak, its, err))
    base = next(t for m, t, *_ in lines if m == methods[0])
    out = []
    for method, t, peak, its, err in lines:
        diff = float(np.max(np.abs(results[method] - results["cholesky"])))
        out.append(
            f"| {size.name} (n={size.n}, d={size.d}, N={size.N}) | {method} | {1 / t:.3g} | {peak / 2**20:.0f} "
            f"| {its} | {err} | {diff:.1e} | {base / t:.2f} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=[s.name for s in SIZES], action="append", help="run only these sizes")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain NumPy step (slow at the large sizes)")
    args = ap.parse_args()
    threads = int(os.environ.get("MFLD_THREADS", os.cpu_count() or 1))
    print(
        f"float64, eta = {ETA}, lam = {LAM}, threads = {threads}; timed steps after warm-up; "
        f"speed-up against the first method of each size"
    )
    print("| size | method | steps/s | peak MiB | CG iterations | drift err | pos diff vs cholesky | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    with threadpool_limits(limits=threads):
        for size in SIZES:
            if args.only and size.name not in args.only:
                continue
            for line in row(size, not args.no_plain):
                print(line, flush=True)


if __name__ == "__main__":
    main()
