"""Kernel and parameter alignment against the dimension (docs/theory.md §4.4, Theorem 5.4).

Single-index target ``g(u° . x)``, tanh with bias, Gaussian inputs, and the
scalings ``lam = c_lam / (d log d)``, ``lam_a = c_a d log d``, ``n = c_n d log d``.
At initialisation (the prior) ``A = O(1/sqrt d)`` and ``P = O(1/d)``; after
training both are Omega(1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mfld.model.datasets import make_dataset

from ..jobs import Job, Result, Runner, run_serial
from ..report import Report, fit_slope, mean_se, pm
from .training import current_backend, experiment_config, run_settings, train


def _scalings(c: dict[str, Any], d: int) -> tuple[int, float, float]:
    """``n = c_n d log d``, ``lam = c_lam / (d log d)``, ``lam_a = c_a d log d``."""
    dl = d * math.log(d)
    return int(round(c["c_n"] * dl)), c["c_lam"] / dl, c["c_a"] * dl


def train_run(setting: dict[str, Any], d: int, seed: int, backend: str = "numpy") -> Result:
    """One training run at dimension ``d``: alignments at the start and the end, and the final test loss."""
    c = setting
    n, lam, lam_a = _scalings(c, d)
    ds = make_dataset("single-index", d=d, n=n, n_test=500, link=c["link"], seed=seed)
    settings = run_settings({**c, "lam": lam, "lam_a": lam_a}, seed)
    tr = train(ds, settings, c["steps"], c["steps"], backend=backend)
    return {
        "row": [
            tr["kernel_alignment"][0],
            tr["kernel_alignment"][-1],
            tr["parameter_alignment"][0],
            tr["parameter_alignment"][-1],
            tr["test_loss"][-1],
        ]
    }


def run(
    full: bool = False, seed: int = 0, runner: Runner = run_serial, overrides: dict[str, Any] | None = None
) -> Report:
    c = experiment_config("alignment", full, overrides)
    report = Report("alignment", "Kernel and parameter alignment against d (Theorem 5.4 scalings)")
    setting = {k: c[k] for k in ("N", "eta", "steps", "c_lam", "c_a", "c_n", "lam_w", "link")}
    jobs = [
        Job(
            train_run,
            {"setting": setting, "d": d, "seed": seed + s, "backend": current_backend()},
            f"d = {d}, seed {seed + s}",
        )
        for s in range(c["seeds"])
        for d in c["dims"]
    ]
    results = runner(jobs)
    dims = np.array(c["dims"], dtype=float)
    # runs[s, i, k]: seed s, dimension i, column k of the run's row (A0, A, P0, P, test loss)
    runs = np.array([[r["row"] for r in results[s * len(dims) : (s + 1) * len(dims)]] for s in range(c["seeds"])])
    mean, se = mean_se(runs)
    rows = [[d, *_scalings(c, d), *m.tolist()] for d, m in zip(c["dims"], mean, strict=True)]
    # The slopes of each seed's curve, then their mean and standard error over the seeds.
    slopes_A, slopes_P = ([fit_slope(dims, run[:, col]) for run in runs] for col in (0, 2))
    (slope_A, slope_A_se), (slope_P, slope_P_se) = mean_se(slopes_A), mean_se(slopes_P)
    report.table(
        f"Mean ± standard error over {c['seeds']} seeds; N = {c['N']}, eta = {c['eta']}, {c['steps']} steps",
        ["d", "n", "lam", "lam_a", "A(mu_0)", "A(trained)", "P(mu_0)", "P(trained)", "test loss"],
        [
            [*row[:4], *(pm(m, e) for m, e in zip(mu, sigma, strict=True))]
            for row, mu, sigma in zip(rows, mean, se, strict=True)
        ],
    )
    report.table(
        "Slopes in log d at initialisation (per seed, then mean ± s.e.)",
        ["A(mu_0)", "P(mu_0)"],
        [[pm(slope_A, slope_A_se), pm(slope_P, slope_P_se)]],
    )
    report.claim(f"A(mu_0) = O(1/sqrt d): slope {slope_A:.2f} in [-0.7, -0.3]", -0.7 <= slope_A <= -0.3)
    report.claim(f"P(mu_0) = O(1/d): slope {slope_P:.2f} in [-1.3, -0.7]", -1.3 <= slope_P <= -0.7)
    report.claim("trained kernel alignment above untrained for every d", bool(np.all(mean[:, 1] > mean[:, 0])))
    report.claim(
        f"trained alignment stays bounded below as d grows: min A = {mean[:, 1].min():.3f} >= 0.5",
        mean[:, 1].min() >= 0.5,
    )
    report.data = {
        "config": c,
        "columns": ["A0", "A", "P0", "P", "test_loss"],
        "rows": rows,
        "se": se.tolist(),
        "runs": runs.tolist(),
        "slope_A0": slope_A,
        "slope_A0_se": slope_A_se,
        "slope_P0": slope_P,
        "slope_P0_se": slope_P_se,
        "slopes_A0": slopes_A,
        "slopes_P0": slopes_P,
    }
    fig, ax = report.figure("alignment", figsize=(6.5, 4.5), constrained_layout=True)
    for col, name in ((0, "A(mu_0)"), (1, "A trained"), (2, "P(mu_0)"), (3, "P trained")):
        ax.errorbar(dims, mean[:, col], yerr=se[:, col], fmt="o-", capsize=3, label=name)
    ax.plot(dims, mean[0, 0] * np.sqrt(dims[0] / dims), "k:", lw=0.8, label="d^-1/2")
    ax.plot(dims, mean[0, 2] * dims[0] / dims, "k--", lw=0.8, label="d^-1")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d")
    ax.set_title(f"mean of {c['seeds']} seeds, bars ±1 s.e.", fontsize=9)
    ax.legend(fontsize=8)
    return report
