"""The particle step with its passes over the n x N features in blocks of several sizes, against one block.

``mfld.model.backend.CACHE_BLOCK_BYTES`` sets how many bytes of the features one block holds: the features
are formed, multiplied in each CG product (``H (q * (H^T V))``) and contracted into the drift block by block,
so that a block's second pass reads the cache rather than memory. This times ``--steps`` steps of the paper's
configuration (``mfld run paper``, its defaults) at ``--N`` particles for each block size, the sizes in rotated
order over ``--repeats``, and prints the median seconds per step and its ratio to the same code with the whole array
in one block. Every block size gives the same trajectory to round-off (tests/model/test_cache_blocks.py).
Run it with nothing else on the machine.

    python benchmarks/cache_blocks.py --N 100000          # 1000 x 10^5 features, 800 MB
    python benchmarks/cache_blocks.py --N 2000 --steps 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from threadpoolctl import threadpool_limits

from mfld.config import load_config
from mfld.discretizations import loop
from mfld.model import backend
from mfld.solver import build

WHOLE = 2**62  # bytes: every array is one block


def seconds_per_step(N: int, steps: int, threads: int, block_bytes: int) -> float:
    backend.CACHE_BLOCK_BYTES = block_bytes
    config = load_config("paper", [f"threads={threads}", f"particles.N={N}", "output.plot=false"])
    system = build.build_system(config, build.build_problem(config))
    with threadpool_limits(limits=threads):
        loop.run(system, 2)  # warm-up: the first exact solve, the preconditioner
        start = time.perf_counter()
        loop.run(system, steps)
        return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mib", type=float, nargs="+", default=[2, 4, 8, 16, 32], help="block sizes to try (MiB)")
    args = ap.parse_args()
    sizes = [WHOLE] + [int(m * 2**20) for m in args.mib]
    times: dict[int, list[float]] = {s: [] for s in sizes}
    print(
        f"load average before: {os.getloadavg()[0]:.2f}; paper configuration, N = {args.N}, {args.threads} BLAS "
        f"thread(s), {args.steps} steps after 2 of warm-up, {args.repeats} repeats"
    )
    for r in range(args.repeats):
        for s in sizes[r % len(sizes) :] + sizes[: r % len(sizes)]:
            times[s].append(seconds_per_step(args.N, args.steps, args.threads, s))
    base = statistics.median(times[WHOLE])
    print("| block | s/step (median) | x one block |\n|---|---|---|")
    for s in sizes:
        med = statistics.median(times[s])
        print(f"| {'one block' if s == WHOLE else f'{s / 2**20:g} MiB'} | {med:.4g} | {med / base:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
