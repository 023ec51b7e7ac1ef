"""The paper's Section 6 figures on the x1 x2 target (docs/theory.md §5).

* ``paper-figure-1``: kernel alignment and degrees of freedom against training
  time for several label-noise levels sigma in the data; larger sigma, larger df.
* ``paper-figure-2``: the label-noise procedure with level s during training (data
  noise sigma fixed): df and test loss against time; the procedure lowers df.
"""

from __future__ import annotations

import logging

import numpy as np

from mfld.model.datasets import make_dataset
from mfld.model.problem import Problem
from mfld.model.two_timescale import TwoTimescaleFunctional

from ..report import Report
from .training import experiment_config, train

log = logging.getLogger("mfld.validation")


def _problem(c: dict, sigma: float, seed: int) -> TwoTimescaleFunctional:
    ds = make_dataset("x1x2", d=c["d"], n=c["n"], n_test=1000, noise=sigma, seed=seed)
    pb = Problem.from_dataset(ds, "tanh_bias", c["lam"], c["lam_a"], c["lam_w"])
    return TwoTimescaleFunctional(pb)


def _init_sd(c: dict) -> float | None:
    return None if c["init_sd"] == "prior" else float(c["init_sd"])


def _curves(c: dict, sigma: float, label_noise: float, seed: int, init_sd: float | None) -> dict[str, np.ndarray]:
    runs = [train(_problem(c, sigma, seed + s), c["N"], c["eta"], c["steps"], seed + s, c["every"], label_noise,
                  init_sd) for s in range(c["seeds"])]
    log.info(f"  sigma = {sigma:g}, label noise s = {label_noise:g}: {c['seeds']} seeds")
    return {k: np.mean([r[k] for r in runs], axis=0) for k in runs[0]}


def _plot(report: Report, name: str, curves: dict, label: str, keys: tuple[str, ...]) -> None:
    fig, axes = report.figure(name, 1, len(keys), figsize=(5 * len(keys), 4), constrained_layout=True)
    for i, (level, cv) in enumerate(curves.items()):
        for ax, key in zip(axes, keys, strict=True):
            ax.plot(cv["time"], cv[key], color=f"C{i}", label=f"{label} = {level:g}")
            ax.set_title(key.replace("_", " "))
            ax.set_xlabel("t")
    axes[0].legend()


def figure_1(full: bool = False, seed: int = 0) -> Report:
    c = experiment_config("paper-figure-1", full)
    report = Report("paper-figure-1", "Paper Figure 1: alignment and df during training, several data-noise levels")
    curves = {sigma: _curves(c, sigma, 0.0, seed, _init_sd(c)) for sigma in c["sigmas"]}
    rows = [[s, cv["kernel_alignment"][0], cv["kernel_alignment"][-1], cv["degrees_of_freedom"][0],
             cv["degrees_of_freedom"][-1], cv["test_loss"][-1]] for s, cv in curves.items()]
    header = ["sigma", "A(mu_0)", "A(final)", "df(mu_0)", "df(final)", "test loss"]
    setting = (f"x1 x2, d = {c['d']}, n = {c['n']}, N = {c['N']}, eta = {c['eta']}, lam = {c['lam']}, "
               f"{c['steps']} steps, mean of {c['seeds']} seeds")
    report.table(f"{setting}; initial measure N(0, {c['init_sd']}^2 I)", header, rows)
    prior = {sigma: _curves(c, sigma, 0.0, seed, None) for sigma in (c["sigmas"][0], c["sigmas"][-1])}
    report.table(
        f"{setting}; initial measure the prior nu = N(0, I / lam_w) of docs/theory.md §1",
        header,
        [[s, cv["kernel_alignment"][0], cv["kernel_alignment"][-1], cv["degrees_of_freedom"][0],
          cv["degrees_of_freedom"][-1], cv["test_loss"][-1]] for s, cv in prior.items()],
    )
    report.notes.append(
        "Where df starts decides its direction: from the prior nu (sd 1/sqrt(lam_w) = 2) the tanh features are "
        "saturated and the kernel already has high rank, so df starts high and drifts down while the alignment "
        "rises; from a narrow initial measure df starts low and rises, as in the paper's Figure 1. The paper's "
        "initialisation is not stated in the paper; the narrow one is our choice, recorded in the configuration."
    )
    df_final = [r[4] for r in rows]
    report.claim("alignment rises during training for every sigma", all(r[2] > r[1] for r in rows))
    report.claim("df rises during training for every sigma", all(r[4] > r[3] for r in rows))
    report.claim(f"larger sigma gives larger final df: {', '.join(f'{v:.1f}' for v in df_final)}",
                 bool(np.all(np.diff(df_final) > 0)))
    report.data = {"config": c, "rows": rows,
                   "curves": {str(k): {kk: vv.tolist() for kk, vv in v.items()} for k, v in curves.items()}}
    _plot(report, "curves", curves, "sigma", ("kernel_alignment", "degrees_of_freedom"))
    return report


def figure_2(full: bool = False, seed: int = 0) -> Report:
    c = experiment_config("paper-figure-2", full)
    report = Report("paper-figure-2", "Paper Figure 2: the label-noise procedure lowers df")
    curves = {s: _curves(c, c["sigma"], s, seed, _init_sd(c)) for s in c["label_noise"]}
    rows = [[s, cv["degrees_of_freedom"][-1], cv["test_loss"][-1], cv["kernel_alignment"][-1]]
            for s, cv in curves.items()]
    report.table(
        f"x1 x2, d = {c['d']}, n = {c['n']}, data noise sigma = {c['sigma']}, N = {c['N']}, {c['steps']} steps, "
        f"mean of {c['seeds']} seeds",
        ["label noise s", "df(final)", "test loss(final)", "A(final)"],
        rows,
    )
    base = rows[0]
    report.claim("the label-noise procedure lowers df (every s > 0 below s = 0)",
                 all(r[1] < base[1] for r in rows[1:]))
    better = [r[0] for r in rows[1:] if r[2] < base[2]]
    report.notes.append(
        f"Test loss with the procedure: {'lower' if better else 'not lower'} than without for s in "
        f"{better if better else [r[0] for r in rows[1:]]} (s = 0: {base[2]:.4g}; "
        + ", ".join(f"s = {r[0]:g}: {r[2]:.4g}" for r in rows[1:]) + ")."
    )
    report.data = {"config": c, "rows": rows, "test_loss_improves_for": better,
                   "curves": {str(k): {kk: vv.tolist() for kk, vv in v.items()} for k, v in curves.items()}}
    _plot(report, "curves", curves, "s", ("degrees_of_freedom", "test_loss"))
    return report
