"""``mfld validate`` and ``mfld experiment``: run checks or experiments and write one report folder."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from mfld.model.registry import Registry

from .checks import convexity, crosscheck, discretizations, rates
from .experiments import alignment, label_noise, paper, sample_complexity
from .report import Report

Check = Callable[..., Report]

CHECKS: Registry[Check] = Registry("check")
CHECKS.add("convexity", convexity.run, "G along (1-s) mu0 + s mu1 and the linearisation inequality")
CHECKS.add("rate", rates.run, "the exponential rate of Obj(m_t) - Obj(mu*) against the bound; the particle floor")
CHECKS.add("crosscheck", crosscheck.run, "particles against the grid: O(1/N) bias, kernel error, W1/W2, weak order")
CHECKS.add("discretizations", discretizations.run, "accuracy against cost of every discretisation")

EXPERIMENTS: Registry[Check] = Registry("experiment")
EXPERIMENTS.add("alignment", alignment.run, "kernel and parameter alignment against d")
EXPERIMENTS.add("paper-figure-1", paper.figure_1, "alignment and df during training, several noise levels")
EXPERIMENTS.add("label-noise", label_noise.run, "the label-noise procedure against its expected dynamics")
EXPERIMENTS.add("paper-figure-2", paper.figure_2, "df and test loss with the label-noise procedure")
EXPERIMENTS.add("sample-complexity", sample_complexity.run, "sparse targets: the network against kernel ridge")


def run_checks(
    names: list[str], out: str | Path, full: bool = False, seed: int = 0, registry: Registry[Check] = CHECKS,
) -> list[Report]:
    """Run the named checks (``"all"`` for every one), writing ``out/<check>.{json,md,png}`` and a summary."""
    if names == ["all"]:
        names = list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown name(s) {unknown}; choose from {sorted(registry)} or 'all'")
    out = Path(out)
    reports, timings = [], {}
    for name in names:
        t0 = time.perf_counter()
        print(f"running {name} ({'full' if full else 'quick'}) ...", flush=True)
        report = registry[name](full=full, seed=seed)
        timings[name] = time.perf_counter() - t0
        report.write(out)
        reports.append(report)
        print(f"  {'passed' if report.passed else 'FAILED'} in {timings[name]:.1f} s", flush=True)
    summary = ["# mfld validation report", "", f"mode: {'full' if full else 'quick'}, seed {seed}", "",
               "| check | claims held | wall s |", "|---|---|---|"]
    for r in reports:
        held = sum(ok for _, ok in r.claims)
        summary.append(f"| [{r.name}]({r.name}.md) | {held} / {len(r.claims)} | {timings[r.name]:.1f} |")
    summary.append("")
    for r in reports:
        summary += [f"- [{'x' if ok else ' '}] {r.name}: {text}" for text, ok in r.claims]
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    (out / "summary.json").write_text(json.dumps(
        {"mode": "full" if full else "quick", "seed": seed,
         "checks": {r.name: {"passed": r.passed, "seconds": timings[r.name],
                             "claims": [{"claim": t, "holds": ok} for t, ok in r.claims]} for r in reports}},
        indent=1))
    return reports
