"""An experiment's runs as independent jobs: run on a pool of processes, each result saved as it finishes.

A :class:`Job` is ``function(**arguments)`` with a module-level ``function`` and JSON arguments,
returning a JSON mapping (a run's curves, a table row). :class:`JobPool` runs a list of them on
``workers`` processes, one BLAS pool of ``cores // workers`` threads each (idle OpenBLAS threads
spin: two pools of two threads on two cores run slower than one thread each), and writes each
result to ``folder/<key>.json`` as soon as it is known. A job whose file is there already, with
the same function and arguments, is not run again: an interrupted experiment run again continues
where it stopped and ends with the same report as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, cast

from mfld.discretizations.loop import Interrupted
from mfld.model.distributed import cores

log = logging.getLogger("mfld.validation")

Result = dict[str, Any]


@dataclass(frozen=True)
class Job:
    """``function(**arguments)``: one run of an experiment; ``label`` names it in progress messages."""

    function: Callable[..., Result]
    arguments: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def name(self) -> str:
        """``module:qualname`` of the function: a pool's worker imports it by this."""
        return f"{self.function.__module__}:{self.function.__qualname__}"

    @property
    def spec(self) -> dict[str, Any]:
        """What defines the job's result: the function and its arguments."""
        return {"function": self.name, "arguments": self.arguments}

    @property
    def key(self) -> str:
        """A file name for the result: a hash of :attr:`spec`."""
        text = json.dumps(self.spec, sort_keys=True, allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


class Runner(Protocol):
    """Runs jobs and returns their results in the order given."""

    def __call__(self, jobs: Sequence[Job]) -> list[Result]: ...


def run_serial(jobs: Sequence[Job]) -> list[Result]:
    """Run the jobs one after the other in this process, keeping nothing."""
    return [job.function(**job.arguments) for job in jobs]


def _work(connection: Any, name: str, arguments: dict[str, Any], threads: int) -> None:
    """A worker process: run one job, send back ``("done", result, seconds)`` or ``("failed", traceback)``."""
    import importlib
    import traceback

    # The worker leaves the terminal's process group: Ctrl-C reaches the parent alone, which stops the workers.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from threadpoolctl import threadpool_limits

    try:
        module, qualname = name.split(":")
        function: Any = importlib.import_module(module)
        for part in qualname.split("."):
            function = getattr(function, part)
        with threadpool_limits(limits=threads):
            start = time.perf_counter()
            result = function(**arguments)
        connection.send(("done", result, time.perf_counter() - start))
    except BaseException:
        connection.send(("failed", traceback.format_exc()))
    finally:
        connection.close()


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class JobPool:
    """Run jobs on ``workers`` processes (``workers = 1``: in this process), saving each result under ``folder``.

    ``workers = 0`` takes one per core. ``fresh`` runs every job again instead of reading saved results.
    ``reused`` counts the results the last call read back instead of computing.
    """

    def __init__(self, folder: str | Path, workers: int = 0, fresh: bool = False) -> None:
        if workers < 0:
            raise ValueError(f"jobs must be >= 0 (0: one per core), got {workers}")
        self.folder = Path(folder)
        self.workers = workers or cores()
        self.fresh = fresh
        self.reused = 0

    def _saved(self, job: Job) -> Result | None:
        path = self.folder / f"{job.key}.json"
        if self.fresh or not path.exists():
            return None
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning(f"  job result {path} is unreadable: running {job.label or job.name} again")
            return None
        if not isinstance(saved, dict) or saved.get("spec") != json.loads(json.dumps(job.spec)):
            log.warning(f"  job result {path} is of another job: running {job.label or job.name} again")
            return None
        result: Result = saved["result"]
        return result

    def _save(self, job: Job, result: Result, seconds: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{job.key}.json"
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"spec": job.spec, "label": job.label, "seconds": seconds,
                                       "result": result}, allow_nan=False))
        os.replace(partial, path)  # a reader sees the whole result or none

    def __call__(self, jobs: Sequence[Job]) -> list[Result]:
        results: list[Result | None] = [self._saved(job) for job in jobs]
        todo = [k for k, r in enumerate(results) if r is None]
        self.reused = len(jobs) - len(todo)
        if self.reused:
            log.info(f"  {self.reused} of {len(jobs)} job results read back from {self.folder}")
        if not todo:
            return [r for r in results if r is not None]
        workers = min(self.workers, len(todo))
        t0 = time.perf_counter()
        done = 0

        def finished(k: int, result: Result, seconds: float) -> None:
            nonlocal done
            self._save(jobs[k], result, seconds)
            results[k] = result
            done += 1
            left = len(todo) - done
            rate = (time.perf_counter() - t0) / done
            log.info(f"  [{done}/{len(todo)}] {jobs[k].label or jobs[k].name}: {seconds:.0f} s"
                     + (f"; about {rate * left / 60:.0f} min left" if left else ""))

        if workers == 1:
            for k in todo:
                start = time.perf_counter()
                finished(k, jobs[k].function(**jobs[k].arguments), time.perf_counter() - start)
        else:
            self._run_pool(jobs, todo, workers, finished)
        return [r for r in results if r is not None]

    def _run_pool(self, jobs: Sequence[Job], todo: list[int], workers: int,
                  finished: Callable[[int, Result, float], None]) -> None:
        """One process per job, at most ``workers`` at a time; on Ctrl-C or SIGTERM they are killed, and what
        finished stays saved."""
        threads = max(1, cores() // workers)
        log.info(f"  {len(todo)} jobs on {workers} processes, {threads} BLAS thread(s) each")
        context = multiprocessing.get_context("spawn")
        waiting = list(todo)
        running: dict[Connection, tuple[int, Any]] = {}  # the parent's end of each pipe: (job, process)
        # SIGINT too, explicitly: a process started in the background inherits SIGINT ignored, and Python then
        # installs no KeyboardInterrupt handler (the run loop, likewise, installs its own).
        in_main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
        try:
            while waiting or running:
                while waiting and len(running) < workers:
                    k = waiting.pop(0)
                    mine, theirs = context.Pipe(duplex=False)
                    process = context.Process(target=_work, args=(theirs, jobs[k].name, jobs[k].arguments, threads),
                                              daemon=True)
                    process.start()
                    theirs.close()
                    running[mine] = (k, process)
                # Results are saved in the order they finish, not in the order given.
                for ready in multiprocessing.connection.wait(list(running)):
                    connection = cast(Connection, ready)
                    k, process = running.pop(connection)
                    try:
                        message = connection.recv()
                    except EOFError:
                        process.join()
                        raise RuntimeError(f"job {jobs[k].label or jobs[k].name} ended without a result "
                                           f"(exit code {process.exitcode}; out of memory?)") from None
                    finally:
                        connection.close()
                    process.join()
                    if message[0] == "failed":
                        raise RuntimeError(f"job {jobs[k].label or jobs[k].name} failed:\n{message[1]}")
                    finished(k, message[1], float(message[2]))
        except KeyboardInterrupt:
            saved = len(jobs) - len(waiting) - len(running)
            raise Interrupted(0, f"interrupted: {saved} of {len(jobs)} job results are saved in {self.folder}; "
                              "the same command continues from them") from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for _, process in running.values():
                process.kill()
            for _, process in running.values():
                process.join()
