"""The experiments' job pool: results saved as they finish, read back instead of rerun, in the order given."""

from __future__ import annotations

import json
import logging
import os

import pytest

from mfld.solver.cli import main
from mfld.validation import jobs as jobs_module
from mfld.validation.experiments.training import experiment_config
from mfld.validation.jobs import Job, JobPool, run_serial, time_left


def power(x: float, p: int = 2) -> dict[str, float]:
    return {"value": x**p, "pid": os.getpid()}


def _jobs(n: int = 5, p: int = 2) -> list[Job]:
    return [Job(power, {"x": float(k), "p": p}, f"x = {k}") for k in range(n)]


def test_a_pool_returns_the_results_in_the_order_given_and_saves_each(tmp_path):
    pool = JobPool(tmp_path, workers=2)
    results = pool(_jobs())
    assert [r["value"] for r in results] == [float(k * k) for k in range(5)]
    assert os.getpid() not in {r["pid"] for r in results}  # run in the workers
    assert len(list(tmp_path.glob("*.json"))) == 5 and not list(tmp_path.glob(".*partial"))
    assert [r["value"] for r in run_serial(_jobs())] == [r["value"] for r in results]


def test_saved_results_are_read_back_and_changed_jobs_run_again(tmp_path):
    first = JobPool(tmp_path, workers=1)(_jobs(3))
    again = JobPool(tmp_path, workers=1)
    assert again(_jobs(4)) == [*first, again(_jobs(4))[3]] and again.reused == 4
    changed = JobPool(tmp_path, workers=1)
    assert [r["value"] for r in changed(_jobs(3, p=3))] == [0.0, 1.0, 8.0] and changed.reused == 0
    fresh = JobPool(tmp_path, workers=1, fresh=True)
    fresh(_jobs(3))
    assert fresh.reused == 0


def test_an_unreadable_or_foreign_result_file_is_run_again_with_a_warning(tmp_path, caplog):
    jobs = _jobs(2)
    JobPool(tmp_path, workers=1)(jobs)
    (tmp_path / f"{jobs[0].key}.json").write_text("{ not json")
    foreign = json.loads((tmp_path / f"{jobs[1].key}.json").read_text())
    foreign["spec"]["arguments"]["x"] = 7.0
    foreign["result"]["value"] = -1.0
    (tmp_path / f"{jobs[1].key}.json").write_text(json.dumps(foreign))
    pool = JobPool(tmp_path, workers=1)
    with caplog.at_level(logging.WARNING, logger="mfld.validation"):
        assert [r["value"] for r in pool(jobs)] == [0.0, 1.0]
    assert pool.reused == 0
    assert "unreadable" in caplog.text and "of another job" in caplog.text


def test_a_negative_job_count_is_refused():
    with pytest.raises(ValueError, match="jobs must be >= 0"):
        JobPool(".", workers=-1)


def test_experiment_settings_are_checked_against_the_table(capsys):
    assert experiment_config("paper-figure-1", False, {"seeds": 3, "eta": 1})["eta"] == 1.0
    with pytest.raises(ValueError, match="has no setting 'sedes'"):
        experiment_config("paper-figure-1", False, {"sedes": 3})
    with pytest.raises(ValueError, match="seeds = 'two' should be of type int like 2"):
        experiment_config("paper-figure-1", False, {"seeds": "two"})
    assert main(["experiment", "alignment", "paper-figure-1", "--set", "seeds=1", "--out", "unused"]) == 2
    assert "one experiment at a time" in capsys.readouterr().err


def test_the_long_checks_and_every_experiment_run_on_the_job_pool():
    """The crosscheck's parts are jobs (`mfld validate crosscheck --jobs N` continues an interrupted run); the
    short checks run in the calling process."""
    from mfld.validation.suite import CHECKS, EXPERIMENTS, pooled

    assert all(pooled(EXPERIMENTS[name]) for name in EXPERIMENTS)
    assert {name for name in CHECKS if pooled(CHECKS[name])} == {"crosscheck"}


def fails(x: float) -> dict[str, float]:
    if x == 2.0:
        raise ArithmeticError("no result at x = 2")
    return {"value": x}


def test_a_failed_job_is_named_and_the_finished_ones_stay_saved(tmp_path):
    jobs = [Job(fails, {"x": float(k)}, f"x = {k}") for k in range(4)]
    with pytest.raises(RuntimeError, match="job x = 2 failed: ArithmeticError: no result at x = 2"):
        JobPool(tmp_path, workers=2)(jobs)
    again = JobPool(tmp_path, workers=1)
    saved = {p.stem for p in tmp_path.glob("*.json")}
    assert jobs[2].key not in saved and saved <= {j.key for j in jobs}
    with pytest.raises(ArithmeticError):  # in this process (workers = 1): the job's own error
        again(jobs)
    assert again.reused == len(saved)


def test_jobs_go_to_an_existing_scheduler(tmp_path):
    """``--scheduler ADDRESS``: the pool submits to that cluster and starts none of its own."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        pool = JobPool(tmp_path, workers=1, scheduler=cluster.scheduler_address)
        results = pool(_jobs(3))
    assert [r["value"] for r in results] == [0.0, 1.0, 4.0] and os.getpid() not in {r["pid"] for r in results}
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_the_time_left_weighs_the_jobs_by_their_cost(tmp_path, caplog, monkeypatch):
    # Ten seconds for a tenth of the work: 90 s left, whatever the count of jobs says.
    assert time_left(10.0, 1.0, 9.0) == "90 s"
    assert time_left(60.0, 1.0, 9.0) == "9 min"
    assert time_left(5.0, 0.0, 3.0) == "an unknown time"
    ticks = iter(range(1, 100))
    monkeypatch.setattr(jobs_module.time, "perf_counter", lambda: float(next(ticks)))  # one second per reading
    jobs = [Job(power, {"x": 1.0}, "small", cost=1.0), Job(power, {"x": 2.0}, "large", cost=99.0)]
    with caplog.at_level(logging.INFO, logger="mfld.validation"):
        JobPool(tmp_path, workers=1)(jobs)
    # 3 s for the small job (pool start to its end): 99 times that is left, not once that as a count would say.
    assert any("[1/2] small" in r.getMessage() and "about 5 min left" in r.getMessage() for r in caplog.records)
    assert Job(power, {"x": 1.0}, cost=5.0).key == Job(power, {"x": 1.0}).key  # the cost defines no result
