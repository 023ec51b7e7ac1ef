"""Numbers the prose of the docs quotes from a report are checked against that report's JSON (issue 36, item 6):
a regenerated report whose numbers moved fails here until the prose follows."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _assert_quoted(doc: str, quotes: Mapping[str, str] | Sequence[str], source: str, where: str = "") -> None:
    """Every quote is in docs/``doc`` (runs of whitespace read as one space, so a quote may wrap a line); the failure
    names ``source``, the report the numbers come from, and what is missing."""
    text = " ".join((DOCS / doc).read_text().split())
    if isinstance(quotes, Mapping):
        missing: dict[str, str] | list[str] = {k: q for k, q in quotes.items() if q not in text}
    else:
        missing = [q for q in quotes if q not in text]
    assert not missing, f"docs/{doc}{where} quotes other numbers than {source}: {missing}"


def test_the_rate_scaling_in_the_theory_is_the_rate_reports():
    rows = json.loads((DOCS / "validation" / "rate.json").read_text())["data"]["grid_rates"]
    two = [r for r in rows if r[0] == "two-timescale"]
    lam = np.array([r[1] for r in two])
    rate = np.array([r[2] for r in two])
    power = float(np.polyfit(np.log(lam), np.log(rate), 1)[0])
    first, last = two[0], two[-1]
    quoted = [
        f"`lam^{power:.2f}`",
        f"({rate[0]:.3g} at lam = {first[1]:g}",
        f"{rate[-1]:.3g} at {last[1]:g}",
        f"from {first[4]:.3g} to {last[4]:.3g}",
        f"10^{round(last[7])} at lam = {last[1]:g}",
        f"10^{round(first[7])} at {first[1]:g}",
    ]
    _assert_quoted("theory.md", quoted, "docs/validation/rate.json", where=" §4")


def _report(name: str) -> dict:
    return json.loads((DOCS / "experiments" / "full" / f"{name}.json").read_text())


def _table(report: dict, starts: str) -> list[list]:
    return next(t["rows"] for t in report["tables"] if t["title"].startswith(starts))


def timescales_quotes(report: dict) -> dict[str, str]:
    """The numbers docs/experiments.md quotes from the full timescales report, formatted as it quotes them."""
    data = report["data"]
    stat = data["stationary"]
    quotes = {
        "TS_STAT_L1": f"{min(r['l1'] for r in stat):.2g} to {max(r['l1'] for r in stat):.2g}",
        "TS_STAT_VAR": f"{max(r['var_error'] for r in stat):.1g}",
    }
    for case, key in (("prior", "PRIOR"), ("optimum", "OPT")):
        gaps = [r["sup_W1_extrapolated"] for r in data["averaging"][case]]
        rates = data["config"]["rates"]
        local = [np.log(a / b) / np.log(s / r) for a, b, r, s in zip(gaps, gaps[1:], rates, rates[1:], strict=False)]
        quotes[f"TS_{key}_GAPS"] = ", ".join(f"{g:.2g}" for g in gaps)
        quotes[f"TS_{key}_LOCAL"] = ", ".join(f"{q:.2f}" for q in local)
        quotes[f"TS_{key}_Q"] = f"{data['orders'][case]['q']:.3f}"
        quotes[f"TS_{key}_U"] = f"{data['orders'][case]['u']:.2g}"
        quotes[f"TS_{key}_POWER"] = f"{data['orders'][case]['q_power_law']:.2f}"
    cost = _table(report, "Cost")
    quotes["TS_LATE_RATES"] = ", ".join(f"{row[3]:.2f}" for row in cost[:-1])
    quotes["TS_LATE_LIMIT"] = f"{cost[-1][3]:.2f}"
    by_rate = {row[0]: row for row in cost}
    quotes["TS_GAP_R1"] = f"{by_rate[1.0][2] / by_rate['limit'][2]:.1f} times the limit's"
    quotes["TS_GAP_R4"] = f"{by_rate[4.0][2]:.2g}"
    quotes["TS_GAP_LIMIT"] = f"{by_rate['limit'][2]:.2g}"
    particles = {row[0]: row for row in _table(report, "Particles")}
    quotes["TS_P_R1"] = particles[1.0][-1].split(" ")[0] + " ± " + particles[1.0][-1].split(" ")[2]
    quotes["TS_P_LIMIT"] = particles["limit"][-1].strip()
    titled = next(t for t in report["tables"] if t["title"].startswith("Particles") and "its optimum" in t["title"])
    optimum = {row[0]: row for row in titled["rows"]}
    quotes["TS_OPT_P_R1"] = optimum[1.0][-1].rsplit(" ", 1)[0]
    marks = [cell.rsplit(" ", 1)[1] for row in optimum.values() if row[0] != "limit" for cell in row[2:]]
    quotes["TS_OPT_ALL_N"] = "finite N dominates at every r and N" if set(marks) == {"N"} else "finite r dominates"
    exact = _table(report, "The second layer moved exactly")
    quotes["TS_EXACT_16000"] = ", ".join(row[-3] for row in exact)
    return quotes


def test_the_timescales_section_quotes_the_full_report():
    quotes = timescales_quotes(_report("timescales"))
    _assert_quoted("experiments.md", quotes, "experiments/full/timescales.json")
    theory = " ".join((DOCS / "theory.md").read_text().split())
    used = ("TS_PRIOR_LOCAL", "TS_PRIOR_Q", "TS_PRIOR_U", "TS_OPT_Q", "TS_OPT_U")
    assert all(quotes[k] in theory for k in used), "docs/theory.md §7 quotes other numbers than timescales.json"


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _z(mean: float, se: float) -> float:
    return abs(mean) / se


def experiment_quotes() -> dict[str, str]:
    """The tables and numbers docs/experiments.md quotes from the full alignment, paper-figure-2 and
    sample-complexity reports: the reports' own strings for table cells, prose numbers computed from unrounded
    values (issue 36: numbers rounded twice, and standard errors counted from rounded ones)."""
    quotes: dict[str, str] = {}
    alignment = _report("alignment")
    for row in alignment["tables"][0]["rows"]:
        quotes[f"alignment d = {row[0]}"] = _row([row[0], row[1], *row[4:]])
    data = alignment["data"]
    by_d = {r[0]: (r, se) for r, se in zip(data["rows"], data["se"], strict=True)}
    p = data["columns"].index("P") + 4
    (r20, s20), (r80, s80) = by_d[20], by_d[80]
    quotes["alignment P apart"] = (
        f"{_z(r20[p] - r80[p], float(np.hypot(s20[p - 4], s80[p - 4]))):.0f} standard errors apart"
    )
    quotes["alignment slopes"] = (
        f"d^({data['slope_A0']:.2f} ± {data['slope_A0_se']:.2f})",
        f"d^({data['slope_P0']:.3f} ± {data['slope_P0_se']:.3f})",
    )
    figure_2 = _report("paper-figure-2")
    for row in figure_2["tables"][0]["rows"]:
        quotes[f"figure 2 s = {row[0]}"] = _row([f"{row[0]:g}", *row[1:]])
    curves = figure_2["data"]["curves"]
    for name, key in (("degrees_of_freedom", "df"), ("test_loss", "test loss")):
        base = np.array(curves["0.0"]["runs"][name])[:, -1]
        zs = []
        for s in ("0.5", "1.0", "2.0"):
            diff = np.array(curves[s]["runs"][name])[:, -1] - base
            zs.append(_z(diff.mean(), diff.std(ddof=1) / np.sqrt(diff.size)))
        quotes[f"figure 2 {key} z"] = f"{zs[0]:.1f}, {zs[1]:.1f} and {zs[2]:.1f} standard errors from 0"
    sample = _report("sample-complexity")
    for row in sample["tables"][0]["rows"]:
        if (row[0], row[1]) in {(8, 100), (8, 3200), (16, 100), (16, 3200), (32, 200), (32, 3200)}:
            quotes[f"sample d = {row[0]}, n = {row[1]}"] = _row(row)
    return quotes


def test_the_experiment_tables_are_the_reports_strings():
    text = (DOCS / "experiments.md").read_text()
    flat = " ".join(text.split())
    missing = {}
    for key, quote in experiment_quotes().items():
        for q in quote if isinstance(quote, tuple) else (quote,):
            if q not in text and q not in flat:
                missing[key] = q
    assert not missing, f"docs/experiments.md quotes other numbers than the full reports: {missing}"


def sweep_quotes(report: dict) -> dict[str, str]:
    """docs/experiments.md's label-noise-sweep numbers: per map, at the largest N and s, the paired df and test-loss
    changes (the report's cells) and the grid's expected df change."""
    c = report["data"]["config"]
    N, s = c["Ns"][-1], c["label_noise"][-1]
    rows = {(r[0], r[1], r[2]): r for r in _table(report, "At stationarity")}
    quotes = {"sweep runs": f"{len(c['features']) * len(c['Ns']) * len(c['label_noise']) * c['seeds']} particle runs"}
    for f in c["features"]:
        r = rows[f, N, s]
        grid = report["data"]["grid"][f]["df"]
        quotes[f"{f} df"] = f"{f}: {r[5]} (grid {grid[-1] - grid[0]:.4f})"
        quotes[f"{f} test"] = f"{f}: {r[7]} (z = {r[8]})"
        if abs(float(r[8])) > 3:
            base = float(rows[f, N, 0.0][6].split(" ± ")[0])
            quotes[f"{f} relative"] = f"{f.split('_')[0]} ({100 * float(r[7].split(' ± ')[0]) / base:+.1f} %)"
    return quotes


def test_the_label_noise_sweep_section_quotes_the_full_report():
    _assert_quoted("experiments.md", sweep_quotes(_report("label-noise-sweep")), "label-noise-sweep.json")


def real_data_quotes(report: dict) -> dict[str, str]:
    """docs/experiments.md's real-data numbers: per set, the report's cells for the alignment at start and end, the
    test losses of the initial kernel, the network and the RBF kernel, and the z of the paired differences."""
    quotes = {}
    for row in _table(report, "All training rows"):
        name = row[0]
        quotes[f"{name} alignment"] = f"{name}: A {row[1]} -> {row[2]}"
        quotes[f"{name} test"] = f"{name}: {row[7]} -> {row[8]} (z = {row[10]}), RBF {row[9]} (z = {row[11]})"
    return quotes


def test_the_real_data_section_quotes_the_full_report():
    _assert_quoted("experiments.md", real_data_quotes(_report("real-data")), "real-data.json")


def _quick(name: str) -> dict:
    return json.loads((DOCS / "experiments" / f"{name}.json").read_text())


def test_the_quick_label_noise_numbers_are_the_quick_reports():
    """The label-noise section's quick-mode numbers (docs/experiments/, `mfld experiment all`)."""
    rows = _quick("label-noise")["data"]["rows"]
    grid = ", ".join(f"{r[1]:.2f}" for r in rows)
    particles = ", ".join(f"{r[2]:.2f}" for r in rows)
    levels = ", ".join(f"{r[0]:g}" for r in rows)
    worst = max(abs(r[1] - r[2]) for r in rows)
    f2 = _quick("paper-figure-2")["data"]["rows"]
    quoted = [
        f"agree on df to {worst:.1g}",
        f"({grid} for s = {levels}, against {particles} for particles)",
        f"lowers df from {f2[0][1]:.1f} to {f2[1][1]:.1f} (s = {f2[1][0]:g}) and {f2[2][1]:.1f} (s = {f2[2][0]:g})",
        f"from {f2[0][2]:.3f} to {f2[1][2]:.3f} and {f2[2][2]:.3f}",
    ]
    _assert_quoted("experiments.md", quoted, "the quick reports")


def _quick(name: str) -> dict:
    return json.loads((DOCS / "experiments" / f"{name}.json").read_text())


def _mean(cell: str) -> float:
    return float(cell.split(" ± ")[0])


def _se(cell: str) -> float:
    return float(cell.split(" ± ")[1])


def quick_quotes() -> list[str]:
    """What docs/experiments.md's prose quotes from the quick reports of alignment, paper-figure-1 and
    sample-complexity, formatted as it quotes them."""
    out = []
    report = _quick("alignment")
    data, rows = report["data"], report["tables"][0]["rows"]
    d = [r[0] for r in rows]
    A0, A, P0, P = ([_mean(r[k]) for r in rows] for k in (4, 5, 6, 7))
    out += [
        f"d^{data['slope_A0']:.2f} ({', '.join(f'{a:.2f}' for a in A0)} for d = {', '.join(map(str, d))})",
        f"d^{data['slope_P0']:.2f} ({P0[0]:.2f} to {P0[-1]:.2g})",
        f"alignment is {min(A):.2f} to {max(A):.2f} for every d and P is {min(P):.2f} to {max(P):.2f}",
    ]
    report = _quick("paper-figure-1")
    narrow, prior, paired = (t["rows"] for t in report["tables"])
    a0, a1, df0, df1 = ([_mean(r[k]) for r in narrow] for k in (1, 2, 3, 4))
    se1 = [_se(r[4]) for r in narrow]
    out += [
        f"({min(a0):.2f}-{max(a0):.2f} to {min(a1):.2f}-{max(a1):.2f})",
        f"df rises from {np.mean(df0):.0f} to about {np.mean(df1):.0f}",
        f"({', '.join(f'{x:.1f}' for x in df1)} for sigma = {', '.join(f'{r[0]:g}' for r in narrow)})",
        f"(standard errors {min(se1):.2f}-{max(se1):.2f} over 2 seeds)",
        f"{_mean(paired[0][1]):.2f} ± {_se(paired[0][1]):.2f} at sigma = {paired[0][0]:g} and "
        f"{_mean(paired[1][1]):.2f} ± {_se(paired[1][1]):.2f} at sigma = {paired[1][0]:g}",
        f"df starts at {_mean(prior[0][3]):.0f} and drifts down to {_mean(prior[0][4]):.0f}",
    ]
    needed = _quick("sample-complexity")["tables"][1]["rows"]
    small, large = needed
    out += [
        f"at d = {small[0]} all three methods get there by n = {min(small[1:])}-{max(small[1:])}",
        f"At d = {large[0]} the mean-field network needs n = {large[1]}, while kernel ridge regression with the "
        f"initial-measure kernel needs more than {str(large[2]).lstrip('> ')} and with a tuned RBF kernel {large[3]}",
    ]
    return out


def test_the_quick_prose_is_the_quick_reports():
    _assert_quoted("experiments.md", quick_quotes(), "the quick reports")


def _e(x: float, sign: bool = False) -> str:
    """``x`` as the docs write it: one decimal of mantissa, the exponent without its leading zero."""
    mantissa, exponent = f"{x:{'+' if sign else ''}.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def test_the_full_label_noise_table_and_prose_are_the_report():
    """docs/experiments.md's full label-noise table (typed to five digits) and the differences its prose quotes."""
    rows = _report("label-noise")["tables"][0]["rows"]
    lines = [
        f"| {s:g} | {grid:.5f} | {part:.5f} | {_e(part - grid, True)} | {_e(se)} |" for s, grid, part, se, *_ in rows
    ]
    gaps = [r[5] - r[4] for r in rows]  # U of the particles less U of the grid
    quotes = [
        *lines,
        f"to {_e(max(abs(r[2] - r[1]) for r in rows))}, within a fifth of a standard error",
        f"{_e(min(gaps[1:]))} to {_e(max(gaps[1:]))} above the grid's at every s > 0",
        f"and {_e(gaps[0])} at s = 0",
    ]
    assert all(abs(r[2] - r[1]) < r[3] / 5 for r in rows)  # "within a fifth of a standard error at every s"
    _assert_quoted("experiments.md", quotes, "experiments/full/label-noise.json")
