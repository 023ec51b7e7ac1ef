"""How many BLAS threads a run's processes take: the thread policy of ``threads = 0``.

OpenBLAS's idle threads spin. On a machine that other processes keep busy, a pool with a
thread per core fights them for every core and the step collapses: 300 steps of
``mfld run paper`` on two cores took 9.9 s on two threads and 15.2 s on one with nothing else
running, 26.5 s against 13.9 s beside one CPU-bound process, and 64.8 s against 32.5 s beside
three (benchmarks/threads_policy.py, docs/measurements/threads_policy.json; the policy took 10.4,
16.0 and 33.6 s). So a run takes the cores that are idle when it starts,
shared among its processes, and at least one thread each:

    threads = max(1, min(cores // processes, floor((cores - busy) / processes + 1/2)))

with ``busy`` the cores other processes kept busy over the last tenth of a second (the run's
own other MPI ranks, waiting for rank 0's choice, not counted). The choice is
stored in the run's file (``threads``), so that a resume uses the same pools: BLAS sums in a
thread-dependent order, and a resume must stay bit-identical. ``threads > 0`` in the
configuration, or the environment variable ``MFLD_THREADS``, overrides the policy.

The price of following the load: two runs of one configuration started separately, under
different loads, may take different counts and then agree only to round-off (one against two
threads on two cores: H H^T 3e-14 apart at n = 100, N = 300; 150 pcg steps of a small run,
positions 2.7e-15 apart). Fix ``threads`` (or ``MFLD_THREADS``) where runs are compared bit for
bit; the test suite runs on one thread for that reason.
"""

from __future__ import annotations

import math
import os
import time

from mfld.config import Config
from mfld.model.distributed import Communicator, cores


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle and iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(interval: float = 0.1) -> float:
    """Cores kept busy by other processes over ``interval`` seconds (this one sleeps meanwhile).

    From /proc/stat where there is one, else the one-minute load average.
    """
    before = _cpu_times()
    if before is None:
        return float(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    time.sleep(interval)
    after = _cpu_times()
    assert after is not None
    total = after[1] - before[1]
    share = (after[0] - before[0]) / total if total > 0 else 0.0
    return share * (os.cpu_count() or 1)


def choose_threads(available: int, busy: float, processes: int = 1) -> int:
    """The policy: the idle cores shared among ``processes``, at least one thread and at most an equal share each."""
    if available < 1 or processes < 1:
        raise ValueError(f"cores and processes must be >= 1, got {available} and {processes}")
    idle = max(0.0, available - busy)
    return max(1, min(available // processes or 1, math.floor(idle / processes + 0.5)))


def _from_environment() -> int | None:
    env = os.environ.get("MFLD_THREADS", "").strip()
    if not env:
        return None
    if not env.isdigit():
        raise ValueError(f"MFLD_THREADS must be an integer >= 0 (0: no override, as if unset), got {env!r}")
    return int(env) or None


def blas_threads(config: Config, processes: int = 1) -> int:
    """Threads for each process's BLAS pools: ``MFLD_THREADS``, else ``threads``, else :func:`choose_threads` now."""
    env = _from_environment()
    if env is not None:
        return env
    if config["threads"] > 0:
        return int(config["threads"])
    # The run's other ranks spin in MPI's broadcast of this choice: they are not other processes' load.
    return choose_threads(cores(), max(0.0, busy_cores() - (processes - 1)), processes)


def fix_threads(config: Config, comm: Communicator) -> Config:
    """The configuration with ``threads = 0`` replaced by the count the policy chooses now (rank 0's, on every
    process), to be stored in the run's file so that a resume takes the same pools."""
    if config["threads"] > 0:
        return config
    chosen = comm.bcast(blas_threads(config, comm.size) if comm.rank == 0 else 0)
    return {**config, "threads": int(chosen)}
