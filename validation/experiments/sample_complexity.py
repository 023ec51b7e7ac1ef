"""Sample complexity on m-sparse targets (docs/theory.md §4.7).

``f°(x) = sin(2 pi omega u° . x)`` with ``u°`` supported on m coordinates of the
hypercube ``{-1, 1}^d``. For each d and n: the relative test error
``||f - f°||^2 / ||f°||^2`` of the trained mean-field network, of kernel ridge
regression with the kernel of the initial measure (random features drawn from
the prior, ridge tuned on a held-out fifth of the data), and of kernel ridge
regression with an RBF kernel (bandwidth and ridge tuned the same way). Reported:
the smallest n at which each reaches the threshold, and its growth with d.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mfld.model.datasets import make_dataset
from mfld.model.problem import Problem

from ..jobs import Job, Result, Runner, run_serial
from ..report import Report, mean_se, pm
from .training import current_backend, experiment_config, run_settings, train


def _krr_error(K_tr: np.ndarray, K_te: np.ndarray, y: np.ndarray, y_te: np.ndarray, ridges: np.ndarray) -> float:
    """Kernel ridge regression, ridge chosen on the last fifth of the training data."""
    n = y.size
    cut = max(1, int(0.8 * n))
    best, best_val = None, np.inf
    for r in ridges:
        c = np.linalg.solve(K_tr[:cut, :cut] + r * cut * np.eye(cut), y[:cut])
        val = np.mean((K_tr[cut:, :cut] @ c - y[cut:]) ** 2) if cut < n else 0.0
        if val < best_val:
            best, best_val = r, val
    if best is None:
        raise FloatingPointError("kernel ridge regression: no ridge gave a finite validation error")
    c = np.linalg.solve(K_tr + best * n * np.eye(n), y)
    return float(np.mean((K_te @ c - y_te) ** 2) / np.mean(y_te**2))


def _rbf(A: np.ndarray, B: np.ndarray, width: float) -> np.ndarray:
    d2 = np.sum(A * A, 1)[:, None] + np.sum(B * B, 1)[None] - 2 * A @ B.T
    return np.exp(-np.maximum(d2, 0) / (2 * width * width))


def errors_run(setting: dict[str, Any], d: int, n: int, seed: int, index: int, backend: str = "numpy") -> Result:
    """Relative test errors at dimension ``d`` and ``n`` samples of the network and of the two kernel ridges.

    Run ``index`` of base seed ``seed`` draws its data from seed ``seed + 100 index + d`` and trains with
    ``seed + index``.
    """
    c = setting
    ds = make_dataset(
        "sparse-sin",
        d=d,
        n=n,
        n_test=c["n_test"],
        m=c["m"],
        frequency=c["frequency"],
        inputs="hypercube",
        seed=seed + 100 * index + d,
    )
    assert ds.X_test is not None and ds.Y_test is not None  # generated data sets have test data
    y, y_te = ds.Y[:, 0], ds.Y_test[:, 0]
    pb = Problem.from_dataset(ds, "tanh_bias", c["lam"], c["lam_a"], c["lam_w"])
    tr = train(ds, run_settings(c, seed + index), c["steps"], c["steps"], backend=backend)
    ridges = np.logspace(-6, 0, 7)
    W0 = pb.sample_prior(4000, np.random.default_rng([seed, index, d]))
    H, Ht = pb.feature(ds.X, W0), pb.feature(ds.X_test, W0)
    return {
        "network": 2 * tr["test_loss"][-1] / float(np.mean(y_te**2)),
        "initial kernel": _krr_error(H @ H.T / W0.shape[0], Ht @ H.T / W0.shape[0], y, y_te, ridges),
        "RBF": min(
            _krr_error(_rbf(ds.X, ds.X, w * np.sqrt(d)), _rbf(ds.X_test, ds.X, w * np.sqrt(d)), y, y_te, ridges)
            for w in (0.25, 0.5, 1.0, 2.0)
        ),
    }


def run(
    full: bool = False, seed: int = 0, runner: Runner = run_serial, overrides: dict[str, Any] | None = None
) -> Report:
    c = experiment_config("sample-complexity", full, overrides)
    report = Report("sample-complexity", f"Sample complexity on {c['m']}-sparse targets (hypercube)")
    setting = {k: c[k] for k in ("n_test", "m", "frequency", "N", "eta", "steps", "lam", "lam_a", "lam_w")}
    cells = [(d, n) for d in c["dims"] for n in c["ns"]]
    jobs = [
        Job(
            errors_run,
            {"setting": setting, "d": d, "n": n, "seed": seed, "index": s, "backend": current_backend()},
            f"d = {d}, n = {n}, seed {seed + s}",
        )
        for s in range(c["seeds"])
        for d, n in cells
    ]
    results = runner(jobs)
    methods = ("network", "initial kernel", "RBF")
    # errors[s, i, k]: seed s, cell i (d, n), method k
    errors = np.array(
        [[[r[k] for k in methods] for r in results[s * len(cells) : (s + 1) * len(cells)]] for s in range(c["seeds"])]
    )
    mean, se = mean_se(errors)
    rows = [[d, n, *m.tolist()] for (d, n), m in zip(cells, mean, strict=True)]
    report.table(
        f"Relative test error, mean ± standard error over {c['seeds']} seed(s); m = {c['m']}, "
        f"omega = {c['frequency']}, N = {c['N']}, {c['steps']} steps",
        ["d", "n", "network", "KRR initial kernel", "KRR RBF (tuned)"],
        [[d, n, *(pm(a, b) for a, b in zip(m, e, strict=True))] for (d, n), m, e in zip(cells, mean, se, strict=True)],
    )
    need = []
    for d in c["dims"]:
        r = [x for x in rows if x[0] == d]
        first = [next((x[1] for x in r if x[k] <= c["threshold"]), None) for k in (2, 3, 4)]
        need.append([d, *[v if v is not None else f"> {c['ns'][-1]}" for v in first]])
    report.table(
        f"Smallest n with relative test error <= {c['threshold']}",
        ["d", "network", "KRR initial kernel", "KRR RBF"],
        need,
    )
    report.data = {
        "config": c,
        "methods": list(methods),
        "rows": rows,
        "se": [[d, n, *e.tolist()] for (d, n), e in zip(cells, se, strict=True)],
        "runs": errors.tolist(),
        "n_needed": need,
    }
    fig, axes = report.figure("error-vs-n", 1, len(c["dims"]), figsize=(5 * len(c["dims"]), 4), constrained_layout=True)
    for ax, d in zip(np.atleast_1d(axes), c["dims"], strict=True):
        at = [i for i, (dd, _) in enumerate(cells) if dd == d]
        ns = [cells[i][1] for i in at]
        for k, name in enumerate(("network", "KRR initial kernel", "KRR RBF")):
            ax.errorbar(ns, mean[at, k], yerr=se[at, k], fmt="o-", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(c["threshold"], color="k", lw=0.5)
        ax.set_title(f"d = {d} (mean of {c['seeds']} seed(s), bars ±1 s.e.)", fontsize=9)
        ax.set_xlabel("n")
    np.atleast_1d(axes)[0].legend()
    return report
