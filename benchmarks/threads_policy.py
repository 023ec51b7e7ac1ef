"""The thread policy against fixed thread counts, beside 0, 1 and 3 CPU-bound processes.

For each number of competitors (busy Python loops started first, one process each) this runs
``mfld run paper --set time.steps=STEPS`` with ``MFLD_THREADS=1``, ``MFLD_THREADS=2`` and with
neither (the policy of ``threads = 0``, mfld.solver.threads), in child processes one after
the other, and prints the wall time of each and the thread count the policy chose (read back
from the run's file). The competitors are the load: run it with nothing else on the machine.

    python benchmarks/threads_policy.py                 # 300 steps, 0 1 3 competitors
    python benchmarks/threads_policy.py --steps 100 --competitors 0 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _spin() -> None:
    while True:
        pass


def _run(steps: int, threads: str | None, folder: Path) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k != "MFLD_THREADS"}
    if threads is not None:
        env["MFLD_THREADS"] = threads
    out = folder / f"run-{threads}.h5"
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mfld",
            "-q",
            "run",
            "paper",
            "--overwrite",
            "--out",
            str(out),
            "--set",
            f"time.steps={steps}",
            "--set",
            "output.plot=false",
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t0
    from mfld import load

    return wall, int(load(out).config["threads"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--competitors", type=int, nargs="+", default=[0, 1, 3])
    ap.add_argument("--json", help="write the table here too")
    args = ap.parse_args()
    rows = []
    print(f"mfld run paper, {args.steps} steps, {os.cpu_count()} cores; seconds (threads)")
    print("| competitors | MFLD_THREADS=1 | MFLD_THREADS=2 | policy (threads = 0) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.competitors:
            spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(k)]
            for p in spinners:
                p.start()
            try:
                time.sleep(1.0 if k else 0.0)  # the load is there before the run looks
                cells = {name: _run(args.steps, t, Path(tmp)) for name, t in (("1", "1"), ("2", "2"), ("policy", None))}
            finally:
                for p in spinners:
                    p.kill()
                    p.join()
            rows.append({"competitors": k, **{name: {"seconds": w, "threads": n} for name, (w, n) in cells.items()}})
            print(f"| {k} | " + " | ".join(f"{w:.1f} ({n})" for w, n in cells.values()) + " |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": args.steps, "cores": os.cpu_count(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
