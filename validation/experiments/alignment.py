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
from mfld.model.problem import Problem
from mfld.model.two_timescale import TwoTimescaleFunctional

from ..jobs import Job, Result, Runner, run_serial
from ..report import Report, fit_slope
from .training import current_backend, experiment_config, train


def _scalings(c: dict[str, Any], d: int) -> tuple[int, float, float]:
    """``n = c_n d log d``, ``lam = c_lam / (d log d)``, ``lam_a = c_a d log d``."""
    dl = d * math.log(d)
    return int(round(c["c_n"] * dl)), c["c_lam"] / dl, c["c_a"] * dl


def train_run(setting: dict[str, Any], d: int, seed: int, backend: str = "numpy") -> Result:
    """One training run at dimension ``d``: alignments at the start and the end, and the final test loss."""
    c = setting
    n, lam, lam_a = _scalings(c, d)
    ds = make_dataset("single-index", d=d, n=n, n_test=500, link=c["link"], seed=seed)
    pb = Problem.from_dataset(ds, "tanh_bias", lam, lam_a, c["lam_w"])
    tr = train(TwoTimescaleFunctional(pb), c["N"], c["eta"], c["steps"], seed, c["steps"], backend=backend)
    return {"row": [tr["kernel_alignment"][0], tr["kernel_alignment"][-1], tr["parameter_alignment"][0],
                    tr["parameter_alignment"][-1], tr["test_loss"][-1]]}


def run(full: bool = False, seed: int = 0, runner: Runner = run_serial,
        overrides: dict[str, Any] | None = None) -> Report:
    c = experiment_config("alignment", full, overrides)
    report = Report("alignment", "Kernel and parameter alignment against d (Theorem 5.4 scalings)")
    setting = {k: c[k] for k in ("N", "eta", "steps", "c_lam", "c_a", "c_n", "lam_w", "link")}
    jobs = [Job(train_run, {"setting": setting, "d": d, "seed": seed + s, "backend": current_backend()},
                f"d = {d}, seed {seed + s}") for s in range(c["seeds"]) for d in c["dims"]]
    results = runner(jobs)
    rows = []
    for i, d in enumerate(c["dims"]):
        n, lam, lam_a = _scalings(c, d)
        m = np.mean([r["row"] for r in results[i::len(c["dims"])]], axis=0)
        rows.append([d, n, lam, lam_a, *m.tolist()])
    arr = np.array(rows)
    slope_A, slope_P = fit_slope(arr[:, 0], arr[:, 4]), fit_slope(arr[:, 0], arr[:, 6])
    report.table(
        f"Mean over {c['seeds']} seeds; N = {c['N']}, eta = {c['eta']}, {c['steps']} steps",
        ["d", "n", "lam", "lam_a", "A(mu_0)", "A(trained)", "P(mu_0)", "P(trained)", "test loss"],
        rows,
    )
    report.table("Slopes in log d at initialisation", ["A(mu_0)", "P(mu_0)"], [[slope_A, slope_P]])
    report.claim(f"A(mu_0) = O(1/sqrt d): slope {slope_A:.2f} in [-0.7, -0.3]", -0.7 <= slope_A <= -0.3)
    report.claim(f"P(mu_0) = O(1/d): slope {slope_P:.2f} in [-1.3, -0.7]", -1.3 <= slope_P <= -0.7)
    report.claim("trained kernel alignment above untrained for every d", bool(np.all(arr[:, 5] > arr[:, 4])))
    report.claim(f"trained alignment stays bounded below as d grows: min A = {arr[:, 5].min():.3f} >= 0.5",
                 arr[:, 5].min() >= 0.5)
    report.data = {"config": c, "rows": rows, "slope_A0": slope_A, "slope_P0": slope_P}
    fig, ax = report.figure("alignment", figsize=(6.5, 4.5), constrained_layout=True)
    for col, name in ((4, "A(mu_0)"), (5, "A trained"), (6, "P(mu_0)"), (7, "P trained")):
        ax.loglog(arr[:, 0], arr[:, col], "o-", label=name)
    ax.loglog(arr[:, 0], arr[0, 4] * np.sqrt(arr[0, 0] / arr[:, 0]), "k:", lw=0.8, label="d^-1/2")
    ax.loglog(arr[:, 0], arr[0, 6] * arr[0, 0] / arr[:, 0], "k--", lw=0.8, label="d^-1")
    ax.set_xlabel("d")
    ax.legend(fontsize=8)
    return report
