"""The report of ``mfld experiment timescales``: the runs of :mod:`.timescales` as jobs, tables, claims, figures.

The order ``q`` of the averaging error ``gap ~ r^-q`` is read where the theory predicts it: the weak averaging
expansion ``gap = c_1 / r + c_2 / r^2 + ...`` makes the local order between successive rates,
``q_k = log(gap_k / gap_k+1) / log(r_k+1 / r_k)``, tend to 1 with a deviation that shrinks by the rate ratio at
each step. ``q`` is the last local order; its uncertainty combines how much it still moved from the one before
(the pre-asymptotic drift, larger than what is left of it) and how much it changes between the finer grid alone
and the extrapolated gaps (the grids' own error).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from ..jobs import Job, Result, Runner, run_serial
from ..report import Report, mean_se, pm
from .timescales import A_BOX, GAPS, W_BOX, averaging, grid_run, particle_run, stationary_run
from .training import experiment_config


def local_orders(rates: list[float], gaps: list[float]) -> list[float]:
    """``log(gap_k / gap_k+1) / log(r_k+1 / r_k)`` between successive rates."""
    pairs = zip(gaps, gaps[1:], rates, rates[1:], strict=False)
    return [math.log(a / b) / math.log(s / r) for a, b, r, s in pairs]


def _name(rate: float | None) -> str:
    return "limit" if rate is None else f"{rate:g}"


def order(rates: list[float], gaps: list[float], fine: list[float]) -> tuple[float, float]:
    """``(q, u)``: the last local order of ``gaps`` and its uncertainty (see the module doc); ``fine`` are the gaps
    on the finer grid alone."""
    q = local_orders(rates, gaps)
    return q[-1], math.hypot(q[-1] - q[-2], q[-1] - local_orders(rates, fine)[-1])


def _particle_jobs(
    c: dict[str, Any], seed: int, keys: Sequence[tuple[float | None, int, int]], label: str, **extra: str
) -> list[Job]:
    """One :func:`particle_run` per ``(r, N, run)`` of ``keys``, with ``extra`` arguments (``case``, ``scheme``)
    only where they differ from the defaults, so that the saved runs of the plain case keep their keys."""
    steps = 1.0 if extra.get("scheme") else None  # the exact scheme's cost does not grow with r
    return [
        Job(
            particle_run,
            {
                "lam": c["lam"],
                "rate": r,
                "N": N,
                "eta": c["eta"],
                "T": c["particle_T"],
                "count": c["particle_count"],
                "cells": c["cells"][-1],
                "seed": seed,
                "index": i,
                **extra,
            },
            f"particles{label}, r = {_name(r)}, N = {N}, run {i}",
            cost=N * (steps or r or 1.0),
        )
        for r, N, i in keys
    ]


def run(
    full: bool = False, seed: int = 0, runner: Runner = run_serial, overrides: dict[str, Any] | None = None
) -> Report:
    c = experiment_config("timescales", full, overrides)
    report = Report("timescales", "A finite second-layer speed r against the two-timescale limit (p = 1)")
    lam, T, rates, cells = c["lam"], c["T"], [float(r) for r in c["rates"]], c["cells"]
    jobs = [Job(stationary_run, {"lam": lam, "cells": k}, f"stationary, {k} cells") for k in c["stationary_cells"]]
    keys: list[tuple[str, float | None, int]] = [
        (case, r, k)
        for case in c["cases"]
        for r in [None, *rates]
        for k in cells
        if not (r is None and case != "prior")
    ]
    jobs += [
        Job(
            grid_run,
            {"lam": lam, "cells": k, "T": T, "count": c["count"], "tol": c["tol"], "rate": r, "case": case},
            f"grid, {case}, r = {_name(r)}, {k} cells",
            cost=(r or 1.0) ** 0.5 * k**2,
        )
        for case, r, k in keys
    ]
    rates_p = [float(x) for x in c["particle_rates"]]
    p_keys = [(r, N, i) for r in [None, *rates_p] for N in c["Ns"] for i in range(c["seeds"])]
    o_keys: list[tuple[float | None, int, int]] = []
    if "optimum" in c["particle_cases"]:  # the limit has no a: its runs are the prior case's
        o_keys = [(r, N, i) for r in rates_p for N in c["Ns"] for i in range(c["seeds"])]
    e_keys = [(float(r), N, i) for r in c["exact_rates"] for N in c["Ns"] for i in range(c["seeds"])]
    jobs += _particle_jobs(c, seed, p_keys, "")
    jobs += _particle_jobs(c, seed, o_keys, ", a from its optimum", case="optimum")
    jobs += _particle_jobs(c, seed, e_keys, ", exact second layer", scheme="exact-second-layer")
    results = runner(jobs)
    n_stat, n_p, n_o = len(c["stationary_cells"]), len(keys) + len(p_keys), len(o_keys)
    stationary, grid_results = results[:n_stat], dict(zip(keys, results[n_stat : n_stat + len(keys)], strict=True))
    particles = dict(zip(p_keys, results[n_stat + len(keys) : n_stat + n_p], strict=True))
    from_optimum = dict(zip(o_keys, results[n_stat + n_p : n_stat + n_p + n_o], strict=True))
    exact = dict(zip(e_keys, results[n_stat + n_p + n_o :], strict=True))
    _stationary_section(report, stationary)
    by_case = {
        case: [
            averaging([grid_results[case, r, k] for k in cells], [grid_results["prior", None, k] for k in cells], T)
            for r in rates
        ]
        for case in c["cases"]
    }
    orders = {case: _order_section(report, case, rates, by_case[case]) for case in c["cases"]}
    particle_table = _particle_section(report, c, particles, by_case["prior"], rates)
    optimum_table = None
    if from_optimum and "optimum" in by_case:
        limit = {k: v for k, v in particles.items() if k[0] is None}
        optimum_table = _particle_section(report, c, {**from_optimum, **limit}, by_case["optimum"], rates, "optimum")
    _cost_section(report, c, grid_results, stationary, particles)
    exact_table = _exact_section(report, c, particles, exact)
    report.data = {
        "config": c,
        "stationary": stationary,
        "averaging": by_case,
        "orders": orders,
        "particles": particle_table,
        "particles_optimum": optimum_table,
        "exact": exact_table,
    }
    _figures(report, c, grid_results, stationary, by_case, particle_table)
    return report


def _stationary_section(report: Report, rows: list[Result]) -> None:
    report.table(
        "The stationary identity: P* (on the (a, w) grid) against mu* (on the w grid), both solved to a "
        "certificate of 1e-15",
        [
            "w cells",
            "L1(w-marginal of P*, mu*)",
            "Pinsker bound",
            "E_mu* |E[a | w] - a_mu*(w)|",
            "max |lam_a Var[a | w] - 1|",
        ],
        [[r["cells"], r["l1"], r["bound"], r["mean_error"], r["var_error"]] for r in rows],
    )
    h = [2 * W_BOX / r["cells"] for r in rows]
    slope = stats.linregress(np.log(h), np.log([r["l1"] for r in rows])).slope
    report.notes.append(
        f"The marginal's distance does not fall with h (fitted order {slope:.2f} over {len(rows)} resolutions): on "
        "the grids the identity is exact, and what is left is the solvers' own distance to their fixed points."
    )
    report.claim(
        "the w-marginal of P* is mu*: L1 <= the Pinsker bound of the certificates at every resolution",
        all(r["l1"] <= r["bound"] for r in rows),
    )
    report.claim(
        f"E[a | w] = a_mu*(w): its mu*-mean error <= {A_BOX:g} x the Pinsker bound at every resolution",
        all(r["mean_error"] <= A_BOX * r["bound"] for r in rows),
    )
    report.claim(
        "Var[a | w] = 1 / lam_a to round-off (relative error <= 1e-10) at every resolution",
        all(r["var_error"] <= 1e-10 for r in rows),
    )


def _order_section(report: Report, case: str, rates: list[float], rows: list[dict[str, Any]]) -> dict[str, float]:
    """The table of one initial case and its claims on the order (:func:`order`)."""
    ext = [r["sup_W1_extrapolated"] for r in rows]
    q, u = order(rates, ext, [r["sup_W1"][1] for r in rows])
    power = stats.linregress(np.log(rates), -np.log(ext))
    local = [math.nan, *local_orders(rates, ext)]
    report.table(
        f"Averaging, a from its {case} at t = 0: sup_t W1 of the w-marginal against the two-timescale density "
        "(coarse grid, fine grid, extrapolated), local order, and time-averaged gaps on the fine grid",
        ["r", "W1 (h)", "W1 (h/2)", "W1 extrapolated", "local order", *(f"avg |d {g}|" for g in GAPS)],
        [
            [r, *row["sup_W1"], e, o, *(row[g] for g in GAPS)]
            for r, row, e, o in zip(rates, rows, ext, local, strict=True)
        ],
    )
    report.notes.append(
        f"a from its {case}: one power law fitted to every r gives q = {pm(power.slope, power.stderr)} (its standard "
        "error from the residuals, which here measure the curvature of the pre-asymptotic range)."
    )
    between = f"between r = {rates[-2]:g} and {rates[-1]:g}"
    report.claim(
        f"a from its {case}: the w-marginal follows the two-timescale dynamics as r grows: sup_t W1 ~ r^-q, "
        f"q = {q:.3f} ± {u:.2g} {between}, > 0 by 3 u",
        q > 3 * u,
    )
    report.claim(
        f"a from its {case}: the order is the weak averaging order 1: |q - 1| = {abs(q - 1):.3f} <= 2 u ({2 * u:.3f})",
        abs(q - 1) <= 2 * u,
    )
    return {"q": q, "u": u, "q_power_law": float(power.slope), "se_power_law": float(power.stderr)}


def _particle_section(
    report: Report,
    c: dict[str, Any],
    runs: dict[tuple[float | None, int, int], Result],
    grid: list[dict[str, Any]],
    rates: list[float],
    case: str = "prior",
) -> dict[str, Any]:
    """sup_t W1 of the particles' w-marginal to the two-timescale grid density, per r and N, mean and standard
    error over seeds; a cell is marked r where it exceeds the r = limit cell of its N by more than 2 s.e. of the
    difference (finite r dominates), N otherwise (finite N does). ``case``: where the particles' a started."""
    p_rates: list[float | None] = [float(r) for r in c["particle_rates"]]
    table: dict[str, Any] = {"Ns": c["Ns"], "rates": p_rates, "mean": [], "se": []}
    for r in [*p_rates, None]:
        sups = [[max(runs[r, N, i]["W1"]) for i in range(c["seeds"])] for N in c["Ns"]]
        mean, se = mean_se(np.array(sups), axis=1)
        table["mean"].append(mean.tolist())
        table["se"].append(se.tolist())
    limit_m, limit_se = np.array(table["mean"][-1]), np.array(table["se"][-1])
    rows = []
    for j, r in enumerate([*p_rates, None]):
        m, s = np.array(table["mean"][j]), np.array(table["se"][j])
        mark = (
            ["r" if d > 2 * e else "N" for d, e in zip(m - limit_m, np.hypot(s, limit_se), strict=True)]
            if r
            else [""] * m.size
        )
        gap = grid[rates.index(r)]["sup_W1_extrapolated"] if r in rates else 0.0
        rows.append([r or "limit", gap, *(f"{pm(a, b)} {k}" for a, b, k in zip(m, s, mark, strict=True))])
    report.table(
        f"Particles (eta / r, {c['seeds']} seeds, a from its {case}, T = {c['particle_T']:g}): sup_t W1 of the "
        "w-marginal to the two-timescale grid density; r: finite r dominates (above the limit's by 2 s.e.), N: "
        "finite N does",
        ["r", "grid gap (N = inf)", *(f"N = {N}" for N in c["Ns"])],
        rows,
    )
    drop = limit_m[0] - limit_m[-1]
    se = math.hypot(limit_se[0], limit_se[-1])
    if case != "prior":  # the limit's particles are the same runs: claimed once
        return table
    report.claim(
        f"two-timescale particles approach the grid as N grows: sup W1 at N = {c['Ns'][-1]} is below N = "
        f"{c['Ns'][0]}'s by {drop:.3g} > 3 s.e. ({3 * se:.2g})",
        drop > 3 * se,
    )
    return table


def _gap_curves(c: dict[str, Any], grid: dict[Any, Result], stationary: list[Result]) -> dict[str, tuple[Any, Any]]:
    """Obj(m_t) - Obj(optimum) on the finer grid, a from its prior: the classical objective against P* for each r,
    the two-timescale one against mu* for the limit (the two differ by a constant at the optima, §7)."""
    k = c["cells"][-1]
    star = next(s for s in stationary if s["cells"] == k)
    curves = {}
    for r in [*c["rates"], None]:
        res = grid["prior", None if r is None else float(r), k]
        base = star["objective_two_timescale" if r is None else "objective_classical"]
        curves["limit" if r is None else f"{r:g}"] = (np.array(res["time"]), np.array(res["objective"]) - base)
    return curves


def _cost_section(
    report: Report, c: dict[str, Any], grid: dict[Any, Result], stationary: list[Result], particles: dict[Any, Result]
) -> None:
    curves = _gap_curves(c, grid, stationary)
    target = c["gap_target"]
    rows = []
    for r in [*[float(x) for x in c["rates"]], None]:
        t, gap = curves["limit" if r is None else f"{r:g}"]
        below = np.nonzero(gap <= target)[0]
        t_hit = float(t[below[0]]) if below.size else math.nan
        res = grid["prior", r, c["cells"][-1]]
        p = [particles[r, c["Ns"][-1], i] for i in range(c["seeds"])] if r is None or r in c["particle_rates"] else []
        per_step = float(np.mean([q["wall"] / q["steps"] for q in p])) if p else math.nan
        p_steps = math.ceil(t_hit * (r or 1.0) / c["eta"]) if math.isfinite(t_hit) else math.nan
        late = t >= 0.75 * c["T"]
        decay = -float(np.polyfit(t[late], np.log(gap[late]), 1)[0])
        rows.append(
            [r or "limit", t_hit, float(gap[-1]), decay, res["steps"], res["wall"], p_steps, p_steps * per_step]
        )
    report.table(
        f"Cost: time at which Obj - Obj* <= {target:g} (finer grid, a from its prior) and the gap's decay rate "
        f"fitted on [{0.75 * c['T']:g}, {c['T']:g}]; the grid's adaptive steps and "
        f"wall time to T = {c['T']:g}; the particle steps to that time at eta / r and their wall time at N = "
        f"{c['Ns'][-1]} (the measured time per step times the steps)",
        [
            "r",
            "t (gap <= target)",
            "gap at T",
            "late decay rate",
            "grid steps",
            "grid wall (s)",
            "particle steps",
            "particle wall (s)",
        ],
        rows,
    )


def _figures(
    report: Report,
    c: dict[str, Any],
    grid: dict[Any, Result],
    stationary: list[Result],
    averaging: dict[str, list[dict[str, Any]]],
    particles: dict[str, Any],
) -> None:
    rates = [float(r) for r in c["rates"]]
    fig, ax = report.figure("order", figsize=(6.5, 4.5), constrained_layout=True)
    for i, (case, rows) in enumerate(averaging.items()):
        ext = np.array([r["sup_W1_extrapolated"] for r in rows])
        ax.loglog(rates, ext, "o-", color=f"C{i}", label=f"a from its {case}, extrapolated")
        for j, style in enumerate((":", "--")):
            ax.loglog(rates, [r["sup_W1"][j] for r in rows], style, color=f"C{i}", alpha=0.5)
        ax.loglog(rates, ext[-1] * rates[-1] / np.array(rates), color="0.6", lw=0.8)
    for N, m in zip(particles["Ns"], particles["mean"][-1], strict=True):
        ax.axhline(m, color="0.3", ls="-.", lw=0.6)
        ax.annotate(f"particles, r = limit, N = {N}", (rates[0], m), fontsize=7, va="bottom")
    ax.set_xlabel("second-layer rate r")
    ax.set_ylabel("sup_t W1(w-marginal, two-timescale)")
    ax.set_title("grid: coarse (:), fine (--), extrapolated; grey: 1/r", fontsize=9)
    ax.legend(fontsize=8)
    fig, ax = report.figure("objective-gap", figsize=(6.5, 4.5), constrained_layout=True)
    for i, (label, (t, gap)) in enumerate(_gap_curves(c, grid, stationary).items()):
        ax.semilogy(t[1:], np.maximum(gap[1:], 1e-16), color="k" if label == "limit" else f"C{i}", label=f"r = {label}")
    ax.set_xlabel("t")
    ax.set_ylabel("Obj(m_t) - Obj(optimum)")
    ax.set_title("finite volumes, a from its prior", fontsize=9)
    ax.legend(fontsize=8)
    fig, ax = report.figure("particles", figsize=(6.5, 4.5), constrained_layout=True)
    for i, r in enumerate([*particles["rates"], None]):
        ax.errorbar(
            particles["Ns"],
            particles["mean"][i],
            yerr=particles["se"][i],
            marker="o",
            capsize=2,
            color="k" if r is None else f"C{i}",
            label=f"r = {r or 'limit':g}" if r else "r = limit",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N")
    ax.set_ylabel("sup_t W1(particles' w-marginal, two-timescale grid)")
    ax.legend(fontsize=8)


def _exact_section(
    report: Report, c: dict[str, Any], euler: dict[Any, Result], exact: dict[Any, Result]
) -> dict[str, Any]:
    """The exact second-layer scheme at step eta for every r, against Euler-Maruyama at eta / r: sup_t W1 to the
    two-timescale grid density, mean and standard error over seeds, and the steps of one run."""
    rows, table = [], {"rates": [float(r) for r in c["exact_rates"]], "mean": [], "se": []}
    for r in table["rates"]:
        cells = []
        for N in c["Ns"]:
            m, e = mean_se([max(exact[r, N, i]["W1"]) for i in range(c["seeds"])])
            table["mean"].append(float(m))
            table["se"].append(float(e))
            cells.append(pm(m, e))
        steps = (
            exact[r, c["Ns"][0], 0]["steps"],
            euler[r, c["Ns"][0], 0]["steps"] if (r, c["Ns"][0], 0) in euler else "-",
        )
        rows.append([r, *cells, *steps])
    report.table(
        f"The second layer moved exactly (particles.scheme = 'exact-second-layer', step eta = {c['eta']:g} at every "
        "r): sup_t W1 of the w-marginal to the two-timescale grid density (mean ± s.e.), and the steps of one run "
        "against Euler-Maruyama's at eta / r",
        ["r", *(f"N = {N}" for N in c["Ns"]), "steps, exact", "steps, eta / r"],
        rows,
    )
    r = table["rates"][-1]
    if r in [float(x) for x in c["particle_rates"]]:
        diffs = []
        for N in c["Ns"]:
            a = [max(exact[r, N, i]["W1"]) for i in range(c["seeds"])]
            b = [max(euler[r, N, i]["W1"]) for i in range(c["seeds"])]
            (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
            diffs.append((N, float(ma - mb), float(3 * np.hypot(sa, sb))))
        report.claim(
            f"at r = {r:g} the exact second layer at step eta gives the w-marginal of Euler-Maruyama at eta / r: "
            + ", ".join(f"N = {N}: |{d:.4f}| <= {t:.4f}" for N, d, t in diffs)
            + " (3 s.e.)",
            all(abs(d) <= t for _, d, t in diffs),
        )
    return table
