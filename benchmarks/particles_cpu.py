"""Particle MFLD on the CPU: mfld's step against a plain NumPy step, side by side.

The plain step is what a user would write from docs/theory.md §2: the whole
n x N feature matrix, ``np.linalg.solve`` on the n x n system, the drift in one
expression. Both steps use the same positions and the same noise, so their
outputs are compared too. Peak memory is measured with ``tracemalloc`` (NumPy
reports its allocations to it).

    python benchmarks/particles_cpu.py            # paper size and N = 10^5
    python benchmarks/particles_cpu.py --large    # adds N = 10^6 (mfld only: plain needs > 24 GB)
"""

from __future__ import annotations

import argparse
import math
import time
import tracemalloc

import numpy as np

from mfld.discretizations.particles import euler_maruyama
from mfld.model.datasets import make_dataset
from mfld.model.functional import GradientDrift
from mfld.model.problem import Problem
from mfld.model.two_timescale import TwoTimescaleFunctional

LAM, LAM_A, LAM_W, ETA = 0.004, 0.25, 0.25, 0.2


def plain_step(W, X, Y, xi):
    """One Euler-Maruyama step written directly from the formulas."""
    n, N = X.shape[0], W.shape[0]
    lam_a_bar, lam_w_bar = LAM * LAM_A, LAM * LAM_W
    Xa = np.hstack([X, np.ones((n, 1))])
    H = np.tanh(Xa @ W.T)
    S = H @ H.T / N
    c = np.linalg.solve(S + n * lam_a_bar * np.eye(n), Y)
    a = H.T @ c
    grad = -lam_a_bar * ((1 - H**2) * c * a.T).T @ Xa + lam_w_bar * W
    return W - ETA * grad + math.sqrt(2 * ETA * LAM) * xi


def measure(step, W, xi, repeats):
    step(W, xi)  # warm-up, and the output for the comparison
    tracemalloc.start()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = step(W, xi)
    elapsed = (time.perf_counter() - t0) / repeats
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, elapsed, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", action="store_true", help="also run N = 10^6 (mfld only, about a minute a step)")
    args = ap.parse_args()
    n, d = 1000, 15
    sizes = [(2000, 20), (100_000, 2)] + ([(1_000_000, 1)] if args.large else [])
    ds = make_dataset("x1x2", d=d, n=n, n_test=10, seed=0)
    pb = Problem(ds.X, ds.Y, "tanh_bias", LAM, LAM_A, LAM_W)
    F = TwoTimescaleFunctional(pb)
    drift = GradientDrift(F)
    rng = np.random.default_rng(0)
    print(f"n = {n}, d = {d}, p = {pb.p}, float64; memory_budget = {F.memory_budget / 2**20:.0f} MiB")
    header = f"{'N':>9} | {'mfld steps/s':>12} {'peak MiB':>9} | {'plain steps/s':>13} {'peak MiB':>9} |"
    print(header + f" {'speed ratio':>11} {'memory ratio':>12} {'max |diff|':>10}")
    print("-" * len(header) + "-" * 37)
    for N, repeats in sizes:
        W = pb.sample_prior(N, rng)
        xi = rng.standard_normal(W.shape)
        q = np.full(N, 1.0 / N)
        out_m, t_m, mem_m = measure(lambda W, xi, q=q: euler_maruyama(W, q, drift, ETA, LAM, xi, 1), W, xi, repeats)
        plain_bytes = 4 * n * N * 8
        if plain_bytes < 12 * 2**30:
            out_p, t_p, mem_p = measure(lambda W, xi: plain_step(W, ds.X, ds.Y, xi), W, xi, repeats)
            diff = float(np.max(np.abs(out_m - out_p)))
            print(f"{N:>9} | {1 / t_m:>12.2f} {mem_m / 2**20:>9.0f} | {1 / t_p:>13.2f} {mem_p / 2**20:>9.0f} |"
                  f" {t_p / t_m:>11.2f} {mem_p / mem_m:>12.2f} {diff:>10.1e}")
        else:
            need = f">{plain_bytes >> 30} GiB"
            print(f"{N:>9} | {1 / t_m:>12.3f} {mem_m / 2**20:>9.0f} | {'skipped':>13} {need:>9} |")


if __name__ == "__main__":
    main()
