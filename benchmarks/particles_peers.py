"""The particle step of mfld against what a researcher would write in NumPy, PyTorch or JAX, on the same cores.

One Euler-Maruyama step of the two-timescale MFLD (docs/theory.md §2-3), float64, x1 x2 target, tanh features
with a bias, lam = 0.004, lam_a = lam_w = 0.25, eta = 0.2. Every method runs in a child process of its own,
launched one after the other (the order rotated over ``--repeats``), from the same data, start positions and
noise, with its library's default threads. Methods:

- ``mfld``: the library on its defaults (the functional ``build_functional`` makes from the default
  configuration: ``particles.solve = "auto"``, ``particles.memory_budget_mb``, BLAS threads by
  ``blas_threads``), and with each ``particles.solve`` forced (``mfld-cholesky``, ``mfld-pcg``);
- ``numpy``: the step written from the formulas (the n x N features, ``np.linalg.solve`` on n x n);
- ``torch``: the same closed form in PyTorch (``torch.linalg.cholesky``, ``cholesky_solve``);
- ``torch-autograd``: U(W) in PyTorch, its gradient by autograd (``N dU/dW_i`` is ``grad V`` at w_i);
- ``jax``: the closed form under ``jax.jit`` (float64, ``jax.scipy.linalg.cho_solve``).

Reported per method: seconds per step after warm-up (median), the child's peak resident memory, the drift at
the start positions against the float64 closed form (``numpy``'s; exact methods agree to <= 1e-8), and the share
of the machine's CPU that other processes took while it ran (above 10 %: marked busy). The lower bound of a
matrix-free step, from the measured DGEMM rate and single-core tanh rate (times the cores):
``(4 n N p + 6 n N) / DGEMM + n N / (cores x tanh rate)`` (the two feature contractions, one CG product and
``a = H^T c``; the n N activations), and each method's ratio to it.

    pip install torch==2.13.0 jax          # benchmark-only: neither is a dependency of mfld
    python benchmarks/particles_peers.py --sizes paper
    python benchmarks/particles_peers.py   # paper, N=1e5, n=4096 (long)

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
import tempfile
import time
from pathlib import Path

import numpy as np
from particles_cpu import ETA, LAM, LAM_A, LAM_W, plain_drift  # the problem and plain step of particles_cpu.py

SIZES = {  # name: (n, d, N, warm-up steps, timed steps)
    "paper": (1000, 15, 2000, 3, 10),
    "N=1e5": (1000, 15, 100_000, 1, 3),
    "n=4096": (4096, 64, 65536, 1, 1),
}
METHODS = ("mfld", "mfld-cholesky", "mfld-pcg", "numpy", "torch", "torch-autograd", "jax")


def _data(size: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from mfld.model.datasets import make_dataset

    n, d, N, *_ = SIZES[size]
    ds = make_dataset("x1x2", d=d, n=n, n_test=10, seed=0)
    W0 = np.random.default_rng(0).standard_normal((N, d + 1)) / math.sqrt(LAM_W)
    return ds.X, ds.Y, W0


def _numpy_drift(X: np.ndarray, Y: np.ndarray) -> object:
    return lambda W: plain_drift(W, X, Y)


def _torch_drift(X: np.ndarray, Y: np.ndarray, autograd: bool) -> object:
    import torch

    n = X.shape[0]
    Xa = torch.from_numpy(np.hstack([X, np.ones((n, 1))]))
    Yt = torch.from_numpy(Y)
    lab, lwb = LAM * LAM_A, LAM * LAM_W
    eye = torch.eye(n, dtype=torch.float64)

    def solve(H: torch.Tensor) -> torch.Tensor:
        L = torch.linalg.cholesky(H @ H.T / H.shape[1] + n * lab * eye)
        return torch.cholesky_solve(Yt, L)

    def closed(W: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            Wt = torch.from_numpy(W)
            H = torch.tanh(Xa @ Wt.T)
            c = solve(H)
            a = H.T @ c
            return (lab * ((1 - H * H) * c * a.T).T @ Xa - lwb * Wt).numpy()

    def by_autograd(W: np.ndarray) -> np.ndarray:
        Wt = torch.from_numpy(W).requires_grad_(True)
        H = torch.tanh(Xa @ Wt.T)
        U = 0.5 * lab * torch.sum(Yt * solve(H)) / Yt.shape[1]
        (g,) = torch.autograd.grad(U, Wt)
        return (-W.shape[0] * g - lwb * Wt.detach()).numpy()

    return by_autograd if autograd else closed


def _jax_drift(X: np.ndarray, Y: np.ndarray) -> object:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.scipy.linalg import cho_factor, cho_solve

    n = X.shape[0]
    Xa = jnp.asarray(np.hstack([X, np.ones((n, 1))]))
    Yj = jnp.asarray(Y)
    lab, lwb = LAM * LAM_A, LAM * LAM_W

    @jax.jit
    def drift(W: jax.Array) -> jax.Array:
        H = jnp.tanh(Xa @ W.T)
        c = cho_solve(cho_factor(H @ H.T / W.shape[0] + n * lab * jnp.eye(n)), Yj)
        a = H.T @ c
        return lab * ((1 - H * H) * c * a.T).T @ Xa - lwb * W

    return lambda W: np.asarray(drift(jnp.asarray(W)).block_until_ready())


def _mfld_drift(X: np.ndarray, Y: np.ndarray, solve: str | None) -> tuple[object, int]:
    from mfld.config import load_config
    from mfld.model.functional import GradientDrift
    from mfld.solver import build
    from mfld.solver.threads import blas_threads

    values = {"data.d": X.shape[1], "data.n": X.shape[0], "model.lam": LAM, "model.lam_a": LAM_A, "model.lam_w": LAM_W}
    if solve is not None:
        values["particles.solve"] = solve
    config = load_config(values=values)
    pb = build.build_problem(config, {"X": X, "Y": Y})
    drift = GradientDrift(build.build_functional(config, pb))
    state = {"step": 0}

    def b(W: np.ndarray) -> np.ndarray:
        state["step"] += 1
        return drift(W, np.full(W.shape[0], 1.0 / W.shape[0]), state["step"])

    return b, blas_threads(config)


def child(method: str, size: str, out: Path) -> None:
    X, Y, W0 = _data(size)
    *_, warmup, steps = SIZES[size]
    threads = None
    if method.startswith("mfld"):
        drift, threads = _mfld_drift(X, Y, None if method == "mfld" else method.split("-", 1)[1])
    elif method == "numpy":
        drift = _numpy_drift(X, Y)
    elif method.startswith("torch"):
        drift = _torch_drift(X, Y, autograd=method == "torch-autograd")
    else:
        drift = _jax_drift(X, Y)

    def run() -> None:
        noise = np.random.default_rng(1)
        W = W0
        b0 = drift(W)  # the drift at the start positions, compared across methods (it also warms up)
        np.save(out.with_suffix(".npy"), np.asarray(b0))
        times = []
        for k in range(warmup + steps):
            xi = noise.standard_normal(W.shape)
            t0 = time.perf_counter()
            W = W + ETA * np.asarray(drift(W)) + math.sqrt(2 * ETA * LAM) * xi
            if k >= warmup:
                times.append(time.perf_counter() - t0)
        out.write_text(
            json.dumps(
                {
                    "seconds": float(np.median(times)),
                    "threads": threads,
                    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            )
        )

    if threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            run()
    else:
        run()


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def measure(method: str, size: str, folder: Path) -> dict:
    out = folder / f"{method}-{size}.json"
    tick = os.sysconf("SC_CLK_TCK")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, t0 = _busy_jiffies(), time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", method, size, str(out)], capture_output=True, text=True)
    wall, busy = time.perf_counter() - t0, (_busy_jiffies() - busy0) / tick
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    row = json.loads(out.read_text())
    row["others_cpu"] = max(0.0, busy - own) / (wall * (os.cpu_count() or 1))
    row["drift"] = np.load(out.with_suffix(".npy"))
    return row


def lower_bound(size: str) -> float:
    """Seconds per step no matrix-free step can beat here (see the module doc)."""
    n, d, N, *_ = SIZES[size]
    p = d + 1
    A = np.random.default_rng(0).standard_normal((2000, 2000))
    gemm = min(_timed(lambda: A @ A) for _ in range(3))
    z = np.random.default_rng(0).standard_normal(10**7)
    tanh = min(_timed(lambda: np.tanh(z)) for _ in range(3))
    flops_rate, tanh_rate = 2 * 2000**3 / gemm, 1e7 / tanh
    return (4 * n * N * p + 6 * n * N) / flops_rate + n * N / ((os.cpu_count() or 1) * tanh_rate)


def _timed(f: object) -> float:
    t0 = time.perf_counter()
    f()  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--repeats", type=int, default=1, help="rounds over the methods, the order rotated each round")
    ap.add_argument("--json", help="also write every row to this file")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], Path(args.child[2]))
        return
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    print(f"load average before: {load}; {os.cpu_count()} cores; float64")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            n, d, N, warmup, steps = SIZES[size]
            bound = lower_bound(size)
            found: dict[str, list[dict]] = {m: [] for m in args.methods}
            for r in range(args.repeats):
                k = r % len(args.methods)
                for method in [*args.methods[k:], *args.methods[:k]]:
                    found[method].append(measure(method, size, Path(tmp)))
            ref = next((f[0]["drift"] for m, f in found.items() if m == "numpy" and "drift" in f[0]), None)
            print(
                f"\n{size}: n = {n}, d = {d}, N = {N}; {warmup} warm-up and {steps} timed steps; "
                f"lower bound {bound:.3g} s/step"
            )
            print("| method | s/step | x lower bound | peak MiB | drift vs closed form | others' CPU |")
            print("|---|---|---|---|---|---|")
            for method, runs in found.items():
                ok = [x for x in runs if "error" not in x]
                if not ok:
                    print(f"| {method} | failed: {runs[0]['error'][:80]} | | | | |")
                    continue
                sec = min(x["seconds"] for x in ok)
                err = float(np.linalg.norm(ok[0]["drift"] - ref) / np.linalg.norm(ref)) if ref is not None else math.nan
                others = max(x["others_cpu"] for x in ok)
                busy = " (busy)" if others > 0.10 else ""
                print(
                    f"| {method} | {sec:.4g} | {sec / bound:.1f} | {max(x['peak_mib'] for x in ok):.0f} | "
                    f"{err:.1e} | {100 * others:.0f} %{busy} |",
                    flush=True,
                )
                rows.append(
                    {
                        "size": size,
                        "method": method,
                        "seconds": sec,
                        "lower_bound": bound,
                        "peak_mib": max(x["peak_mib"] for x in ok),
                        "drift_error": err,
                        "others_cpu": others,
                    }
                )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "load_before": load, "rows": rows},
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
