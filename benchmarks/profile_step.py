"""Where a particle step of ``mfld run paper`` spends its time: cProfile of STEPS steps after a warm-up.

The paper's configuration on mfld's defaults (``particles.solve = "auto"``, pcg at this size), on
``--threads`` BLAS threads; prints the milliseconds per step and the functions by their own time.
Run it with nothing else on the machine.

    python benchmarks/profile_step.py                  # 20 warm-up steps, 100 profiled, 2 threads
    python benchmarks/profile_step.py --steps 50 --threads 1
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

from threadpoolctl import threadpool_limits

from mfld.config import load_config
from mfld.discretizations import loop
from mfld.solver import build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=14, help="functions listed")
    args = ap.parse_args()
    config = load_config("paper", [f"threads={args.threads}"])
    system = build.build_system(config, build.build_problem(config))
    with threadpool_limits(limits=args.threads):
        loop.run(system, args.warmup)
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        loop.run(system, args.steps)
        profile.disable()
        wall = time.perf_counter() - start
    print(
        f"{args.steps} steps of mfld run paper, {args.threads} BLAS thread(s): {1e3 * wall / args.steps:.1f} ms "
        "per step"
    )
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
