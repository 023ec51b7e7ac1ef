"""mfld sweep on a Dask LocalCluster: a failing task is reported, finished tasks are skipped on rerun."""

from __future__ import annotations

import csv

import pytest

from mfld.solver.cli import main

pytest.importorskip("dask.distributed")

SWEEP = """
out = "results"
[set]
"data.d" = 3
"data.n" = 20
"data.n_test" = 30
"particles.N" = 30
"time.steps" = 6
"output.checkpoint_every" = 3
"output.metrics_every" = 3
[grid]
seed = [0, 1]
"model.lam" = [0.05, -1.0]
"""


def test_sweep_reports_failures_and_skips_finished_runs(tmp_path, capsys):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    assert main(["sweep", str(spec)]) == 1  # one value of lam is invalid: those runs fail, the others finish
    rows = list(csv.DictReader(open(tmp_path / "results" / "summary.csv")))
    assert len(rows) == 4
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all("'model.lam' must be a finite number > 0" in r["error"] for r in failed)
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) == 2 and all(float(r["U"]) > 0 for r in done)
    assert (tmp_path / "results" / "seed=0-lam=0.05.h5").exists()
    assert "| name |" in (tmp_path / "results" / "summary.md").read_text()
    assert main(["sweep", str(spec)]) == 1
    rows = list(csv.DictReader(open(tmp_path / "results" / "summary.csv")))
    assert sorted(r["status"] for r in rows) == ["failed", "failed", "skipped (done)", "skipped (done)"]


def test_a_changed_sweep_reruns_its_stale_results(tmp_path, capsys):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP.replace('"model.lam" = [0.05, -1.0]', '"model.lam" = [0.05]'))
    assert main(["sweep", str(spec)]) == 0
    spec.write_text(SWEEP.replace('"model.lam" = [0.05, -1.0]', '"model.lam" = [0.05]').replace(
        '"data.n" = 20', '"data.n" = 25'))
    assert main(["sweep", str(spec)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "results" / "summary.csv")))
    assert [r["status"] for r in rows] == ["rerun (settings changed)"] * 2
    from mfld.solver.checkpoint import CheckpointReader

    assert CheckpointReader(tmp_path / "results" / "seed=0-lam=0.05.h5").data["X"].shape[0] == 25
