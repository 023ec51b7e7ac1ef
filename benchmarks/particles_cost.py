"""Cost against work: seconds per particle step of ``mfld run paper`` against N and against n.

Each point is one child process running the paper's configuration (d = 15, tanh_bias, mfld's
defaults: ``particles.solve = "auto"``, the memory budget and thread count it chooses) with
``particles.N`` and ``data.n`` set, ``--warmup`` steps untimed (the first solve is exact and factors
pcg's preconditioner) and then ``--steps`` timed. Printed per point: seconds per step, the mean CG
iterations, whether the features were kept whole or rebuilt in chunks, the child's peak resident
memory, and the share of the CPU other processes took meanwhile. Then the log-log slope of each
sweep between consecutive points: 1 is linear growth.

    python benchmarks/particles_cost.py                      # N = 10^3 .. 10^6 at n = 1000; n = 250 .. 4000 at N = 10^4
    python benchmarks/particles_cost.py --sweep N --json cost.json

Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

SWEEPS = {
    "N": [(1000, N) for N in (1_000, 10_000, 100_000, 1_000_000)],
    "n": [(n, 10_000) for n in (250, 500, 1000, 2000, 4000)],
}


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def point(n: int, N: int, warmup: int, steps: int) -> dict:
    """One point, in this process: the run's seconds per step after ``warmup`` steps."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from mfld.config import load_config
    from mfld.discretizations import loop
    from mfld.model.distributed import Serial
    from mfld.solver import build
    from mfld.solver.threads import fix_threads

    config = load_config("paper", [f"data.n={n}", f"particles.N={N}", "output.plot=false"])
    config = fix_threads(build.fix_memory_budget(config), Serial())
    problem = build.build_problem(config)
    system = build.build_system(config, problem)
    functional = system.functional
    with threadpool_limits(limits=config["threads"]):
        loop.run(system, warmup)
        functional.iterations.clear()
        t0 = time.perf_counter()
        loop.run(system, steps)
        seconds = (time.perf_counter() - t0) / steps
    kept = functional.chunk_size(n) >= N
    iterations = float(np.mean(functional.iterations)) if functional.iterations else 0.0
    return {
        "n": n,
        "N": N,
        "seconds": seconds,
        "cg_iterations": iterations,
        "features": "kept" if kept else "chunks",
        "threads": config["threads"],
        "memory_budget_mb": config["particles"]["memory_budget_mb"],
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(n: int, N: int, warmup: int, steps: int) -> dict:
    tick = os.sysconf("SC_CLK_TCK")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, t0 = _busy_jiffies(), time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--point", str(n), str(N), str(warmup), str(steps)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    others = max(0.0, (_busy_jiffies() - busy0) / tick - own) / (wall * (os.cpu_count() or 1))
    row = json.loads(out.strip().splitlines()[-1])
    row["others_cpu"] = others
    return row


def _slopes(rows: list[dict], key: str) -> list[float]:
    return [
        math.log(b["seconds"] / a["seconds"]) / math.log(b[key] / a[key])
        for a, b in zip(rows[:-1], rows[1:], strict=True)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", choices=list(SWEEPS), nargs="+", default=list(SWEEPS))
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json", help="write the rows here too")
    ap.add_argument("--point", nargs=4, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.point:
        print(json.dumps(point(*args.point)))
        return
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    print(
        f"mfld run paper (d = 15), seconds per step after {args.warmup} warm-up steps, mean of {args.steps}; "
        f"{os.cpu_count()} cores, load average {load:.2f} before"
    )
    table = {}
    for sweep in args.sweep:
        print("\n| n | N | s / step | CG iterations | features | peak MiB | other processes |")
        print("|---|---|---|---|---|---|---|")
        rows = []
        for n, N in SWEEPS[sweep]:
            row = _child(n, N, args.warmup, args.steps)
            rows.append(row)
            busy = " (busy)" if row["others_cpu"] > 0.1 else ""
            print(
                f"| {n} | {N} | {row['seconds']:.4g} | {row['cg_iterations']:.1f} | {row['features']} | "
                f"{row['peak_mib']:.0f} | {100 * row['others_cpu']:.0f} %{busy} |",
                flush=True,
            )
        slopes = _slopes(rows, sweep)
        print(f"log-log slope in {sweep} between consecutive points: " + ", ".join(f"{s:.2f}" for s in slopes))
        table[sweep] = {"rows": rows, "slopes": slopes}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"load_before": load, "cores": os.cpu_count(), "warmup": args.warmup, "steps": args.steps, **table},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
