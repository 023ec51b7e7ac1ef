"""``mfld validate`` and ``mfld experiment``: run checks or experiments and write one report folder."""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mfld.discretizations.loop import Interrupted
from mfld.model.backend import get_backend
from mfld.model.registry import Registry

from .checks import accuracy_cost, convexity, crosscheck, rates
from .experiments import (
    alignment,
    label_noise,
    label_noise_sweep,
    paper,
    real_data,
    sample_complexity,
    timescales_report,
    training,
)
from .jobs import JobPool, SharedCluster
from .report import Report

log = logging.getLogger("mfld.validation")
Check = Callable[..., Report]

CHECKS: Registry[Check] = Registry("check")
CHECKS.add("convexity", convexity.run, "G along (1-s) mu0 + s mu1 and the linearisation inequality")
CHECKS.add("rate", rates.run, "the exponential rate of Obj(m_t) - Obj(mu*) against the bound; the particle floor")
CHECKS.add("crosscheck", crosscheck.run, "particles against the grid: O(1/N) bias, kernel error, W1/W2, weak order")
CHECKS.add("discretizations", accuracy_cost.run, "accuracy against cost of every discretisation")

EXPERIMENTS: Registry[Check] = Registry("experiment")
EXPERIMENTS.add("alignment", alignment.run, "kernel and parameter alignment against d")
EXPERIMENTS.add("paper-figure-1", paper.figure_1, "alignment and df during training, several noise levels")
EXPERIMENTS.add("label-noise", label_noise.run, "the label-noise procedure against its expected dynamics")
EXPERIMENTS.add("label-noise-sweep", label_noise_sweep.run, "the label-noise procedure across feature maps and widths")
EXPERIMENTS.add("paper-figure-2", paper.figure_2, "df and test loss with the label-noise procedure")
EXPERIMENTS.add("sample-complexity", sample_complexity.run, "sparse targets: the network against kernel ridge")
EXPERIMENTS.add("real-data", real_data.run, "alignment and sample efficiency on scikit-learn's data sets")
EXPERIMENTS.add("timescales", timescales_report.run, "a finite second-layer speed r against the two-timescale limit")


def pooled(check: Check) -> bool:
    """Whether the check runs its independent parts as jobs (it takes a ``runner``): every experiment, and the
    checks that are long at full size (the crosscheck)."""
    return "runner" in inspect.signature(check).parameters


def run_checks(
    names: list[str],
    out: str | Path,
    full: bool = False,
    seed: int = 0,
    registry: Registry[Check] = CHECKS,
    backend: str = "numpy",
    jobs: int = 1,
    fresh: bool = False,
    overrides: dict[str, Any] | None = None,
    scheduler: str | None = None,
) -> list[Report]:
    """Run the named checks (``"all"`` for every one), writing ``out/<check>.{json,md,png}`` and a summary.

    An experiment's runs (and a :func:`pooled` check's parts) go to a :class:`~mfld.validation.jobs.JobPool` on
    Dask, of ``jobs`` local processes (0: one per core) or the cluster at ``scheduler``, that saves each result
    under ``out/jobs/<name>/`` as it finishes and reads saved ones back (``fresh``: runs them all again), so that
    the same call after an interruption continues. ``overrides`` set keys of each experiment's configuration
    table (one experiment at a time).
    """
    if names == ["all"]:
        names = list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown name(s) {unknown}; choose from {sorted(registry)} or 'all'")
    get_backend(backend)  # an unavailable backend is refused before any work
    if overrides and len(names) > 1:
        raise ValueError("settings (--set) apply to one experiment at a time; name one")
    out = Path(out)
    reports: list[Report] = []
    timings: dict[str, float] = {}
    cluster = SharedCluster()  # one Dask cluster for every pooled check, started when first needed
    try:
        for name in names:
            t0 = time.perf_counter()
            log.info(f"running {name} ({'full' if full else 'quick'}) ...")
            try:
                with training.backend(backend):
                    if pooled(registry[name]):
                        pool = JobPool(out / "jobs" / name, jobs, fresh, scheduler, cluster)
                        report = registry[name](full=full, seed=seed, runner=pool, overrides=overrides)
                    else:
                        report = registry[name](full=full, seed=seed)
            except (KeyboardInterrupt, Interrupted):
                # What was done stays written; the interrupted check is named in the summary.
                _write_summary(out, reports, timings, full, seed, interrupted=name)
                saved = (
                    f"; its finished runs are saved in {out / 'jobs' / name}: the same command continues from them"
                    if pooled(registry[name])
                    else ""
                )
                raise Interrupted(
                    len(reports),
                    f"interrupted during {name}; the {len(reports)} finished report(s) "
                    f"and summary.md are in {out}{saved}",
                ) from None
            timings[name] = time.perf_counter() - t0
            report.write(out)
            reports.append(report)
            shown = report.status.upper() if report.status == "failed" else report.status
            log.info(f"  {shown} in {timings[name]:.1f} s")
            _write_summary(out, reports, timings, full, seed)
    finally:
        cluster.close()
    return reports


def _write_summary(
    out: Path, reports: list[Report], timings: dict[str, float], full: bool, seed: int, interrupted: str | None = None
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary = [
        "# mfld validation report",
        "",
        f"mode: {'full' if full else 'quick'}, seed {seed}",
        "",
        "| check | claims held | wall s |",
        "|---|---|---|",
    ]
    for r in reports:
        held = f"{sum(ok for _, ok in r.claims)} / {len(r.claims)}" if r.claims else "no claims tested"
        summary.append(f"| [{r.name}]({r.name}.md) | {held} | {timings[r.name]:.1f} |")
    if interrupted:
        summary.append(f"| {interrupted} | interrupted (Ctrl-C): nothing written | |")
    summary.append("")
    for r in reports:
        summary += [f"- [{'x' if ok else ' '}] {r.name}: {text}" for text, ok in r.claims]
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    (out / "summary.json").write_text(
        json.dumps(
            {
                "mode": "full" if full else "quick",
                "seed": seed,
                "interrupted": interrupted,
                "checks": {
                    r.name: {
                        "passed": r.passed,
                        "status": r.status,
                        "seconds": timings[r.name],
                        "claims": [{"claim": t, "holds": ok} for t, ok in r.claims],
                    }
                    for r in reports
                },
            },
            indent=1,
        )
    )
