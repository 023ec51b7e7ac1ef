"""The thread policy of ``threads = 0``: the idle cores, chosen at the start and kept by a resume."""

from __future__ import annotations

import pytest

from conftest import SMALL_RUN
from mfld.config import load_config
from mfld.solver import build, threads
from mfld.storage import CheckpointReader


@pytest.mark.parametrize(
    ("cores", "busy", "processes", "chosen"),
    [
        (2, 0.0, 1, 2),  # nothing else running: every core (12.4 s against 15.8 s on one thread)
        (2, 1.0, 1, 1),  # one CPU-bound process beside it: one thread (17.7 s against 30.3 s on two)
        (2, 3.0, 1, 1),  # three beside it: still one thread, never none (35.7 s against 64.9 s)
        (2, 0.6, 1, 1),  # most of a core taken: round to the nearest
        (2, 0.4, 1, 2),
        (16, 4.0, 1, 12),
        (16, 0.0, 4, 4),  # MPI ranks share the cores
        (16, 10.0, 4, 2),  # 6 idle among 4 ranks: 1.5 rounds up
        (3, 0.0, 4, 1),  # more ranks than cores: one each
    ],
)
def test_the_policy_takes_the_idle_cores_shared_among_the_processes(cores, busy, processes, chosen):
    assert threads.choose_threads(cores, busy, processes) == chosen


def test_the_policy_refuses_no_cores():
    with pytest.raises(ValueError, match="cores and processes must be >= 1"):
        threads.choose_threads(0, 0.0)


def test_busy_cores_is_a_share_of_the_machine():
    assert 0.0 <= threads.busy_cores(0.05) <= threads.os.cpu_count() + 1e-9


def test_the_environment_and_the_key_override_the_policy(monkeypatch):
    monkeypatch.delenv("MFLD_THREADS")
    config = load_config(None, [])
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.1: 0.0)
    monkeypatch.setattr(threads, "cores", lambda: 8)
    assert threads.blas_threads(config) == 8
    assert threads.blas_threads({**config, "threads": 3}) == 3
    monkeypatch.setenv("MFLD_THREADS", "5")
    assert threads.blas_threads({**config, "threads": 3}) == 5
    monkeypatch.setenv("MFLD_THREADS", "0")  # no override, as if unset (issue 36: it was refused)
    assert threads.blas_threads({**config, "threads": 3}) == 3 and threads.blas_threads(config) == 8
    monkeypatch.setenv("MFLD_THREADS", "two")
    with pytest.raises(ValueError, match=r"MFLD_THREADS must be an integer >= 0 \(0: no override.*got 'two'"):
        threads.blas_threads(config)


def test_a_run_stores_the_count_it_chose_and_its_resume_keeps_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MFLD_THREADS")
    used: list[int] = []
    run = build._run
    monkeypatch.setattr(
        build, "_run", lambda system, steps, observers, n: (used.append(n), run(system, steps, observers, n))
    )
    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.1: 1.0)
    path = tmp_path / "run.h5"
    build.start(load_config(None, [*SMALL_RUN, "time.steps=20"]), path)
    assert CheckpointReader(path).config["threads"] == 3 and used == [3]
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.1: 3.0)  # busier now: the resume keeps 3
    build.resume(path, 10)
    assert used == [3, 3]
