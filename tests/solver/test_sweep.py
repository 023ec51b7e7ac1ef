"""mfld sweep on a Dask LocalCluster: a failing task is reported, finished tasks are skipped on rerun."""

from __future__ import annotations

import csv
from pathlib import Path

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
    out = capsys.readouterr().out.splitlines()
    # Each run's line is logged as it finishes; stdout has the tally and the failures once (issue 36: twice before).
    assert out[0] == "2 failed, 2 done" or out[0] == "2 done, 2 failed", out
    assert sum("failed " in line for line in out[1:]) == 2 and not any(" done " in line for line in out), out
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
    spec.write_text(
        SWEEP.replace('"model.lam" = [0.05, -1.0]', '"model.lam" = [0.05]').replace('"data.n" = 20', '"data.n" = 25')
    )
    assert main(["sweep", str(spec)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "results" / "summary.csv")))
    assert [r["status"] for r in rows] == ["rerun (settings changed)"] * 2
    from mfld.storage import CheckpointReader

    assert CheckpointReader(tmp_path / "results" / "seed=0-lam=0.05.h5").data["X"].shape[0] == 25


def test_grid_points_whose_readable_names_collide_get_their_own_files(tmp_path):
    from mfld.solver.sweep import tasks

    for name in ("sub/y.csv", "sub_y.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x0,x1,y\n" + "".join(f"{i % 3},{i % 5 - 2},{(i % 7) / 7}\n" for i in range(20)))
    names = [
        t["name"] for t in tasks(None, {}, {"data.source": [str(tmp_path / "sub/y.csv"), str(tmp_path / "sub_y.csv")]})
    ]
    assert len(set(names)) == 2
    spec = tmp_path / "sweep.toml"
    shared = SWEEP.split("[grid]")[0].replace('"data.d" = 3\n', "")  # d comes from the files
    spec.write_text(shared + f'[grid]\n"data.source" = ["{tmp_path / "sub/y.csv"}", "{tmp_path / "sub_y.csv"}"]\n')
    assert main(["sweep", str(spec)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "results" / "summary.csv")))
    assert len({r["path"] for r in rows}) == 2 and all(
        (tmp_path / "results" / Path(r["path"]).name).exists() for r in rows
    )


@pytest.mark.parametrize("workers", ["-1", "0"])
def test_workers_must_be_positive(tmp_path, capsys, workers):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    assert main(["sweep", str(spec), "--workers", workers]) == 2
    assert "--workers must be a positive number" in capsys.readouterr().err


def test_a_sweep_resumes_its_own_unfinished_plugin_run(tmp_path, monkeypatch):
    import shutil
    import sys

    from mfld.config import load_config
    from mfld.model import features
    from mfld.solver import build
    from mfld.solver.sweep import run_task, tasks
    from mfld.storage import load

    shutil.copy(Path(__file__).resolve().parents[2] / "docs" / "examples" / "bump_feature.py", tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    shared = {
        "data.d": 2,
        "data.n": 20,
        "data.n_test": 30,
        "particles.N": 30,
        "time.steps": 6,
        "output.checkpoint_every": 3,
        "output.metrics_every": 3,
        "model.feature": "bump_feature:BUMP",
    }
    (task,) = tasks(None, shared, {"seed": [0]})
    unfinished = load_config(None, [*task["overrides"], "time.steps=3", 'output.progress="off"', "output.plot=false"])
    build.start(unfinished, tmp_path / f"{task['name']}.h5")
    sys.modules.pop("bump_feature", None)
    features._PLUGINS.clear()  # as in a fresh worker process: nothing imported yet
    row = run_task(task, str(tmp_path))
    assert row["status"] == "resumed", row
    assert load(tmp_path / f"{task['name']}.h5").step == 6


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe\x00binary", r"bad.toml' is not UTF-8 text \(byte 0"),
        (b"caf\xe9 = 1\n", r"bad.toml' is not UTF-8 text \(byte 3"),
        (b"[grid\nseed = [0]\n", r"bad.toml' is not valid TOML"),
        (
            b"[grid]\nseed = [" + b",".join(b"%d" % k for k in range(1000)) + b"]\n"
            b'"model.lam" = [' + b",".join(b"%d" % k for k in range(1, 1001)) + b"]\n",
            r"has 1,000,000 points \(seed \(1000\) x model.lam \(1000\)\), more than the 100,000",
        ),
    ],
)
def test_a_sweep_file_that_cannot_be_run_is_refused_by_name_at_once(tmp_path, content, message):
    """Issue 37 (low): binary and Latin-1 sweep files got the codec's error without the file's name; a grid of 10^6
    points spent minutes before any output."""
    from mfld.solver.sweep import read_sweep

    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_sweep(path)
