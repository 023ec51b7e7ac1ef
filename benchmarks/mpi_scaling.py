"""Strong and weak scaling of the sharded particle step over MPI ranks.

    python benchmarks/mpi_scaling.py [--ranks 1 2] [--n 500] [--N 40000] [--steps 5]

The driver launches ``mpiexec -n R`` on this file for each R; the workers time
the Euler-Maruyama step (positions, Gram matrix, one Allreduce of n x n words,
the n x n Cholesky on every rank, the drift) and, apart, the Allreduce of an
n x n matrix and a GEMM of the same shape as the Gram update, so that the
communication cost can be set against the compute:

    per step and rank:  Gram  n^2 N / R flops (symmetric rank-k update, NumPy's a @ a.T)
                        features and drift about 4 n N p / R flops
                        Allreduce of n^2 words (8 n^2 bytes)

Both the Gram flops and the Allreduce grow like n^2, so their ratio depends on the
particles per rank alone: the Allreduce is below 10% of the step once
N / R > 10 * (Allreduce seconds) / (Gram seconds per particle), printed below.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def worker(n: int, N: int, steps: int) -> None:
    from mpi4py import MPI

    from mfld.discretizations.noise import KeyedNoise
    from mfld.discretizations.particles import Particles
    from mfld.model.datasets import make_dataset
    from mfld.model.distributed import MPIComm, Serial, shard
    from mfld.model.problem import Problem
    from mfld.model.two_timescale import TwoTimescaleFunctional

    world = MPI.COMM_WORLD
    comm = MPIComm(world) if world.Get_size() > 1 else Serial()
    ds = make_dataset("x1x2", d=15, n=n, n_test=10, seed=0)
    F = TwoTimescaleFunctional(Problem.from_dataset(ds, "tanh_bias", 0.004, 0.25, 0.25), comm=comm)
    start, stop = shard(N, comm.rank, comm.size)
    noise = KeyedNoise(0)
    system = Particles(F, noise.normal(0, start, stop, 16) * 2.0, 0.2, noise, offset=start, total=N)
    system.step()  # warm-up
    world.Barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        system.step()
    world.Barrier()
    step_time = (time.perf_counter() - t0) / steps
    S = np.random.default_rng(0).standard_normal((n, n))
    world.Barrier()
    t0 = time.perf_counter()
    for _ in range(10):
        buf = S.copy()
        world.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    allreduce = (time.perf_counter() - t0) / 10
    B = np.random.default_rng(1).standard_normal((n, 4096))
    t0 = time.perf_counter()
    for _ in range(5):
        B @ B.T
    gram_per_particle = (time.perf_counter() - t0) / 5 / 4096
    if comm.rank == 0:
        print(
            json.dumps(
                {
                    "R": comm.size,
                    "N": N,
                    "n": n,
                    "step": step_time,
                    "allreduce": allreduce,
                    "gram_per_particle": gram_per_particle,
                }
            )
        )


def launch(R: int, n: int, N: int, steps: int) -> dict:
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    cmd = [sys.executable, __file__, "--worker", "--n", str(n), "--N", str(N), "--steps", str(steps)]
    if R > 1:
        if mpiexec is None:
            raise RuntimeError("no mpiexec: pip install 'mfld[mpi]'")
        cmd = [mpiexec, "-n", str(R), *cmd]
    # One BLAS thread per rank, so that R ranks use R cores.
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--N", type=int, default=40000, help="particles for strong scaling (weak: N per rank)")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    if args.worker:
        worker(args.n, args.N, args.steps)
        return
    print(f"n = {args.n}, d = 15, p = 16, float64, one BLAS thread per rank, {args.steps} timed steps")
    print(
        f"{'scaling':<8} {'R':>3} {'N':>8} {'N/R':>8} {'s/step':>9} {'speed-up':>9} {'efficiency':>10} "
        f"{'Allreduce s':>11} {'Allreduce %':>11}"
    )
    last = None
    for kind in ("strong", "weak"):
        base = None
        for R in args.ranks:
            N = args.N if kind == "strong" else args.N * R
            r = launch(R, args.n, N, args.steps)
            base = base or r["step"]
            speedup = base / r["step"] * (R if kind == "weak" else 1)
            eff = speedup / R
            share = 100 * r["allreduce"] / r["step"] if R > 1 else 0.0
            print(
                f"{kind:<8} {R:>3} {N:>8} {N // R:>8} {r['step']:>9.4f} {speedup:>9.2f} {eff:>10.2f} "
                f"{r['allreduce'] if R > 1 else 0:>11.2e} {share:>10.1f}%"
            )
            last = r
    per_particle = last["gram_per_particle"]
    threshold = 10 * last["allreduce"] / per_particle
    print(
        f"\nGram update: {per_particle * 1e6:.2f} us per particle at n = {args.n} "
        f"({args.n**2 / per_particle / 1e9:.1f} GFLOP/s on one core as a rank-k update); "
        f"Allreduce of n^2 = {args.n**2} words "
        f"({8 * args.n**2 / 1e6:.1f} MB): {last['allreduce'] * 1e3:.2f} ms on {last['R']} ranks."
    )
    print(
        f"The Allreduce is below 10% of the Gram update once N / R > {threshold:.0f} particles per rank "
        "(independent of n: both grow like n^2)."
    )


if __name__ == "__main__":
    main()
