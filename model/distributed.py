"""Processes that share one particle system: the communicator and the split of particles.

The particle system couples only through the Gram matrix ``S = sum_i q_i h_i h_i^T``
and a few scalar sums, so each process holds a contiguous block of the global
particle indices and the functional sums its local contributions with one
``Allreduce``. :class:`Serial` is the single-process stand-in with the same
interface; :func:`world` returns the MPI one when the program was started by
``mpiexec`` with more than one process (mpi4py is the optional extra ``mfld[mpi]``).
"""

from __future__ import annotations

import os
from typing import Any, Protocol, TypeVar

import numpy as np

from .backend import Array, namespace, to_host


def cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


T = TypeVar("T")
Summable = TypeVar("Summable", float, Array)


class Communicator(Protocol):
    """The processes that share one measure: ``rank`` of ``size``, with sums over all of them."""

    rank: int
    size: int

    def sum(self, x: Summable) -> Summable:
        """The sum of ``x`` (a float or an array) over the processes."""
        ...

    def allgather(self, x: T) -> list[T]: ...

    def barrier(self) -> None: ...

    def bcast(self, x: T) -> T:
        """Rank 0's ``x`` on every process."""
        ...


class Serial:
    """One process: sums are identities."""

    rank, size = 0, 1

    def sum(self, x: Summable) -> Summable:
        return x

    def allgather(self, x: T) -> list[T]:
        return [x]

    def barrier(self) -> None:
        pass

    def bcast(self, x: T) -> T:
        return x


class MPIComm:
    """An mpi4py communicator; arrays are summed in place (host-staged for CuPy arrays)."""

    def __init__(self, comm: Any) -> None:  # an mpi4py Comm (mpi4py is optional)
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def sum(self, x: Summable) -> Summable:
        from mpi4py import MPI

        if isinstance(x, float | int | np.floating | np.integer):
            return self.comm.allreduce(float(x), op=MPI.SUM)
        xp = namespace(x)
        host = np.ascontiguousarray(to_host(x))
        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        return host if xp is np else xp.asarray(host)

    def allgather(self, x: T) -> list[T]:
        return self.comm.allgather(x)

    def barrier(self) -> None:
        self.comm.Barrier()

    def bcast(self, x: T) -> T:
        return self.comm.bcast(x, root=0)


def single_process(objective: str, comm: Communicator | None) -> Serial:
    """The communicator of an objective that runs in one process: refuse a split over several."""
    if comm is not None and comm.size > 1:
        raise ValueError(f"model.objective = {objective!r} runs in one process; only 'two-timescale' is sharded")
    return Serial()


_LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


def launched_processes() -> int:
    """The number of processes an MPI launcher started this one with (1 without a launcher), read from its
    environment, so that a serial run never initialises MPI."""
    for var in _LAUNCHER_SIZE:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 1


def world() -> Serial | MPIComm:
    """The MPI world when running under ``mpiexec -n R`` with R > 1, else :class:`Serial` (MPI untouched)."""
    if launched_processes() <= 1:
        return Serial()
    try:
        from mpi4py import MPI
    except ImportError:
        return Serial()
    comm = MPI.COMM_WORLD
    return MPIComm(comm) if comm.Get_size() > 1 else Serial()


def shard(total: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous block ``[start, stop)`` of ``range(total)`` held by ``rank`` of ``size``."""
    base, extra = divmod(total, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
