"""The elementwise passes of a particle step, side by side: ``tanh`` of the pre-activations and ``1 - h^2``.

At n x N (default 1000 x 2000, the paper's size) with mfld's code on 1 and 2 threads
(:mod:`mfld.model.elementwise`, what a run does on its thread count) and, where numba is installed
(benchmark-only: ``pip install numba``), a fused numba kernel with ``parallel=True`` on the same
thread counts: the candidate the issue named. Milliseconds per pass (best of ``--repeat``), in one
invocation, with the load average before and after. Run it with nothing else on the machine.

    python benchmarks/elementwise.py
    python benchmarks/elementwise.py --n 4096 --N 65536 --repeat 5
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from mfld.model import elementwise
from mfld.model.features import FEATURE_MAPS


def best_ms(f: Callable[[], object], repeat: int) -> float:
    f()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def numba_kernel() -> Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None:
    """``H = tanh(Z)``, ``D = 1 - H^2`` in one parallel pass, or None without numba."""
    try:
        import numba
    except ImportError:
        return None
    import math

    @numba.njit(parallel=True)
    def fused(Z: np.ndarray, H: np.ndarray, D: np.ndarray) -> None:
        for j in numba.prange(Z.shape[0]):
            for i in range(Z.shape[1]):
                h = math.tanh(Z[j, i])
                H[j, i] = h
                D[j, i] = 1.0 - h * h

    return fused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--N", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        print(f"load average before: {f.read().split()[0]}")
    fm = FEATURE_MAPS["tanh_bias"]
    Z = np.random.default_rng(0).standard_normal((args.n, args.N)) * 2.0
    H = fm.values(Z)
    rows = []
    for threads in (1, 2):
        with elementwise.limited(threads):
            t_h = best_ms(lambda: fm.values(Z), args.repeat)
            t_d = best_ms(lambda: fm.derivative(Z, H), args.repeat)
        rows.append((f"mfld (NumPy), {threads} thread(s)", t_h, t_d, t_h + t_d))
    fused = numba_kernel()
    if fused is not None:
        import numba

        Hn, Dn = np.empty_like(Z), np.empty_like(Z)
        fused(Z, Hn, Dn)
        assert np.allclose(Hn, H, rtol=1e-15, atol=1e-15)
        for threads in (1, 2):
            numba.set_num_threads(threads)
            t = best_ms(lambda: fused(Z, Hn, Dn), args.repeat)
            rows.append((f"numba fused, {threads} thread(s)", float("nan"), float("nan"), t))
    base = rows[0][3]
    print(f"\n{args.n} x {args.N}, ms per pass (best of {args.repeat})\n")
    print("| method | tanh | 1 - h^2 | both | vs mfld on 1 thread |")
    print("|---|---|---|---|---|")
    for name, t_h, t_d, t in rows:
        parts = " | ".join("fused" if np.isnan(x) else f"{x:.2f}" for x in (t_h, t_d))
        print(f"| {name} | {parts} | {t:.2f} | {base / t:.2f}x |")
    with open("/proc/loadavg") as f:
        print(f"\nload average after: {f.read().split()[0]}")


if __name__ == "__main__":
    main()
