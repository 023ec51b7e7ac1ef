"""How the built-in default was chosen: candidate sizes of the scaled-down paper run, and what each shows.

The default run is the first thing a user sees; it should show what the theory is about, feature
learning: the kernel alignment rising, the weights turning to the target's directions, and the
test loss falling with the training loss, in a run short enough to watch. Each candidate is the
shipped default with the keys below replaced, run in this process one after the other (in memory,
no file), with nothing else running. Printed and written to ``docs/measurements/default_demo.json``:
the start and end values of the observables (the best value for the losses), and the wall time.

    python benchmarks/default_demo.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import mfld

OUT = Path(__file__).resolve().parent.parent / "docs" / "measurements" / "default_demo.json"
# Every candidate states the keys in which they differ, whatever the shipped default is today.
BASE = {"data.d": 10, "model.lam": 0.004, "model.lam_a": 0.25, "model.lam_w": 0.25}
CANDIDATES = {
    "0.2.0.dev1 default: n=300, N=1000, eta=0.2, 2000 steps": {
        "data.n": 300,
        "particles.N": 1000,
        "time.eta": 0.2,
        "time.steps": 2000,
    },
    "d=5, n=500, N=1000, eta=0.2, 2000 steps": {
        "data.d": 5,
        "data.n": 500,
        "particles.N": 1000,
        "time.eta": 0.2,
        "time.steps": 2000,
    },
    "n=1000, N=500, eta=0.2, 2000 steps": {"data.n": 1000, "particles.N": 500, "time.eta": 0.2, "time.steps": 2000},
    "n=1000, N=300, eta=0.2, 2000 steps": {"data.n": 1000, "particles.N": 300, "time.eta": 0.2, "time.steps": 2000},
    "n=1000, N=300, eta=0.4, 1000 steps (the default)": {
        "data.n": 1000,
        "particles.N": 300,
        "time.eta": 0.4,
        "time.steps": 1000,
    },
    "n=600, N=400, eta=0.5, 800 steps": {"data.n": 600, "particles.N": 400, "time.eta": 0.5, "time.steps": 800},
}
SHOWN = ("kernel_alignment", "parameter_alignment", "train_loss", "test_loss", "degrees_of_freedom")


def measure(keys: dict) -> dict:
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    t0 = time.perf_counter()
    run = mfld.run(set={**BASE, **keys, "output.progress": "off"})
    wall = time.perf_counter() - t0
    s = run.series
    row = {"keys": keys, "wall_s": round(wall, 1), "load_before": load}
    for name in SHOWN:
        best = s[name].min() if name.endswith("loss") else s[name].max()
        row[name] = {"start": float(s[name][0]), "best": float(best), "end": float(s[name][-1])}
    return row


def main() -> None:
    rows = {}
    print(f"{'candidate':<52} {'A start->end':>16} {'P start->end':>14} {'test loss':>16} {'train':>7} {'wall':>7}")
    for name, keys in CANDIDATES.items():
        r = rows[name] = measure(keys)
        a, p, te, tr = (r[k] for k in ("kernel_alignment", "parameter_alignment", "test_loss", "train_loss"))
        print(
            f"{name:<52} {a['start']:.4f}->{a['end']:.4f}   {p['start']:.3f}->{p['end']:.3f} "
            f"{te['start']:.3f}->{te['end']:.3f}  {tr['end']:.4f} {r['wall_s']:6.1f}s",
            flush=True,
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}",
                "date": time.strftime("%Y-%m-%d"),
                "mfld": mfld.__version__,
                "base": BASE,
                "rows": rows,
            },
            indent=1,
        )
        + "\n"
    )
    print(OUT)


if __name__ == "__main__":
    main()
