"""An experiment's runs as independent jobs: run on Dask, each result saved as it finishes.

A :class:`Job` is ``function(**arguments)`` with a module-level ``function`` and JSON arguments,
returning a JSON mapping (a run's curves, a table row). :class:`JobPool` submits a list of them to
Dask (:func:`dask_client`: a local cluster of ``workers`` single-threaded processes, one BLAS pool
of ``cores // workers`` threads each, since idle OpenBLAS threads spin and two pools of two threads
on two cores run slower than one thread each; or an existing scheduler), and writes each result
to ``folder/<key>.json`` as soon as it is known. A job whose file is there already, with
the same function and arguments, is not run again: an interrupted experiment run again continues
where it stopped and ends with the same report as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mfld.discretizations.loop import Interrupted
from mfld.model.distributed import cores

log = logging.getLogger("mfld.validation")

Result = dict[str, Any]


@dataclass(frozen=True)
class Job:
    """``function(**arguments)``: one run of an experiment; ``label`` names it in progress messages, ``cost`` is
    an estimate of its work relative to the others' (any unit; not part of what defines its result), by which the
    time left is weighed."""

    function: Callable[..., Result]
    arguments: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    cost: float = 1.0

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


def _execute(name: str, arguments: dict[str, Any], threads: int) -> tuple[Result, float]:
    """On a worker: run the job ``name`` (``module:qualname``) on ``threads`` BLAS threads; its result and seconds."""
    import importlib

    from threadpoolctl import threadpool_limits

    module, qualname = name.split(":")
    function: Any = importlib.import_module(module)
    for part in qualname.split("."):
        function = getattr(function, part)
    with threadpool_limits(limits=threads):
        start = time.perf_counter()
        result = function(**arguments)
    return result, time.perf_counter() - start


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2) -> Iterator[Any]:
    """A Dask client: of the scheduler at ``scheduler`` (``tcp://host:8786``), or of a local cluster of ``workers``
    single-threaded worker processes, closed with the client. mfld's one engine for jobs (experiments, checks,
    sweeps)."""
    try:
        import dask
        from dask.distributed import Client, LocalCluster
    except ImportError:  # a dependency of mfld: missing only from a broken environment
        raise ImportError("mfld runs its jobs on Dask: pip install 'dask[distributed]'") from None
    if scheduler:
        client = Client(scheduler)
        cluster = None
    else:
        # Dask starts its workers with MALLOC_TRIM_THRESHOLD_=65536 (and one BLAS thread): glibc then hands
        # memory back after every step's temporaries, and a paper-figure-1 run took 4.1 s in a worker against
        # 1.4 s in a plain process (one thread each). The jobs set their BLAS threads themselves.
        with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # The workers share this process's stderr: a worker that loses the scheduler while the cluster
                # closes (after Ctrl-C) logs "Failed to communicate with scheduler during heartbeat" with a
                # traceback. A job's own error comes back through its future, so the workers log nothing.
                silence_logs=logging.CRITICAL + 1,
            )
        client = Client(cluster)
    try:
        yield client
    finally:
        with _quiet(*TEARDOWN_LOGGERS):
            client.close()
            if cluster is not None:
                cluster.close()


TEARDOWN_LOGGERS = ("tornado", "asyncio", "distributed")
"""Where closing a cluster with tasks still running (after Ctrl-C, or a failed job) logs the connections it cuts,
with tracebacks of Dask's own callbacks: nothing a user can act on, and the interruption is reported already."""


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """The loggers ``names`` silenced inside the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class SharedCluster:
    """One Dask cluster for several job pools in turn (the experiments of one ``mfld experiment all``): started by
    the first pool that needs it, kept while its size fits, closed by :meth:`close` (a local cluster takes seconds
    to start: 39 s for the quick experiments with the old process pool, 55 s starting one per experiment)."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._client: Any = None
        self._key: tuple[str | None, int] | None = None

    @contextlib.contextmanager
    def client(self, scheduler: str | None, workers: int) -> Iterator[Any]:
        if self._key != (scheduler, workers):
            self.close()
            self._client = self._stack.enter_context(dask_client(scheduler, workers))
            self._key = (scheduler, workers)
        try:
            yield self._client
        except BaseException:  # an interrupted or failed pool leaves no work behind on the cluster
            self.close()
            raise

    def close(self) -> None:
        self._stack.close()
        self._client, self._key = None, None


def time_left(elapsed: float, cost_done: float, cost_left: float) -> str:
    """The time left at the pace so far, the jobs weighed by their cost (:attr:`Job.cost`), in words."""
    if cost_done <= 0:
        return "an unknown time"
    seconds = elapsed / cost_done * max(cost_left, 0.0)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class JobPool:
    """Run jobs on Dask, saving each result under ``folder`` as it finishes: a local cluster of ``workers``
    single-threaded processes (``workers = 1``: in this process; 0: one per core), or the cluster of the scheduler
    at ``scheduler``. ``fresh`` runs every job again instead of reading saved results. ``reused`` counts the
    results the last call read back instead of computing. ``cluster`` (a :class:`SharedCluster`) lends a cluster
    that several pools use in turn, started once.
    """

    def __init__(
        self,
        folder: str | Path,
        workers: int = 0,
        fresh: bool = False,
        scheduler: str | None = None,
        cluster: SharedCluster | None = None,
    ) -> None:
        if workers < 0:
            raise ValueError(f"jobs must be >= 0 (0: one per core), got {workers}")
        self.folder = Path(folder)
        self.workers = workers or cores()
        self.fresh = fresh
        self.scheduler = scheduler
        self.cluster = cluster
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
        partial.write_text(
            json.dumps({"spec": job.spec, "label": job.label, "seconds": seconds, "result": result}, allow_nan=False)
        )
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
        cost_left = sum(jobs[k].cost for k in todo)
        cost_done = 0.0

        def finished(k: int, result: Result, seconds: float) -> None:
            nonlocal done, cost_left, cost_done
            self._save(jobs[k], result, seconds)
            results[k] = result
            done += 1
            cost_done += jobs[k].cost
            cost_left -= jobs[k].cost
            left = time_left(time.perf_counter() - t0, cost_done, cost_left)
            log.info(
                f"  [{done}/{len(todo)}] {jobs[k].label or jobs[k].name}: {seconds:.0f} s"
                + (f"; about {left} left" if done < len(todo) else "")
            )

        if workers == 1 and not self.scheduler:
            for k in todo:
                start = time.perf_counter()
                finished(k, jobs[k].function(**jobs[k].arguments), time.perf_counter() - start)
        else:
            self._run_pool(jobs, todo, workers, finished)
        return [r for r in results if r is not None]

    def _run_pool(
        self, jobs: Sequence[Job], todo: list[int], workers: int, finished: Callable[[int, Result, float], None]
    ) -> None:
        """Submit the jobs to Dask and save each result as it arrives; on Ctrl-C or SIGTERM the rest are cancelled
        and the cluster closed, and what finished stays saved."""
        from dask.distributed import as_completed

        # A local worker's BLAS pool takes its share of the cores (idle OpenBLAS threads spin); a remote
        # cluster's workers keep their own.
        threads = 0 if self.scheduler else max(1, cores() // workers)
        where = self.scheduler or f"{workers} local processes, {threads} BLAS thread(s) each"
        log.info(f"  {len(todo)} jobs on Dask ({where})")
        # SIGINT too, explicitly: a process started in the background inherits SIGINT ignored, and Python then
        # installs no KeyboardInterrupt handler (the run loop, likewise, installs its own).
        in_main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
        saved = 0
        try:
            with (
                self.cluster.client(self.scheduler, workers)
                if self.cluster
                else dask_client(self.scheduler, workers) as client
            ):
                futures = {
                    client.submit(
                        _execute, jobs[k].name, jobs[k].arguments, threads, key=f"mfld-{jobs[k].key}", pure=False
                    ): k
                    for k in todo
                }
                try:
                    # Results are saved in the order they finish, not in the order given.
                    for future in as_completed(futures):
                        k = futures[future]
                        if future.status == "error":
                            raise RuntimeError(
                                f"job {jobs[k].label or jobs[k].name} failed: "
                                f"{type(future.exception()).__name__}: {future.exception()}"
                            )
                        result, seconds = future.result()
                        finished(k, result, float(seconds))
                        saved += 1
                finally:
                    with _quiet(*TEARDOWN_LOGGERS):
                        client.cancel(list(futures))
        except KeyboardInterrupt:
            done = len(jobs) - len(todo) + saved
            raise Interrupted(
                0,
                f"interrupted: {done} of {len(jobs)} job results are saved in {self.folder}; "
                "the same command continues from them",
            ) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
