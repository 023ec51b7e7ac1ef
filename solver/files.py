"""The run's checkpoint file: the room a run plans in it, its store (one file, or shards and a master under
MPI), the writer lock held for the run's life, and the refusal of outputs that are not files."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from mfld.config import Config
from mfld.config.assembly import Data
from mfld.config.outputs import export, target_path
from mfld.config.typed import RunConfig, typed
from mfld.discretizations.mesh import Grid
from mfld.discretizations.particles import Particles
from mfld.discretizations.system import System
from mfld.model.distributed import Communicator
from mfld.storage import CheckpointStore, ShardedCheckpointStore
from mfld.storage.lock import FileLockedError, WriterLock, writer_path


def planned_rows(config: Config | RunConfig, first_step: int, steps: int, resuming: bool) -> tuple[int, int]:
    """Frames and observables records that ``steps`` steps from step ``first_step`` add to the file if they all run.

    A frame is written at step 0 of a new run, at every multiple of ``checkpoint_every`` and at the
    last step; a record likewise with ``metrics_every``. The file gets exactly this room, so a run
    that ends as planned leaves no padding rows.
    """
    last = first_step + steps

    def hits(every: int) -> int:
        return last // every - first_step // every + (last % every != 0) + (not resuming)

    out = typed(config).output
    return hits(out.checkpoint_every), hits(out.metrics_every)


NewFile = tuple[str, Data, str, int, Grid | None, str, bool, float | None]
"""What a new checkpoint file is created with: config text, data, kind, dimension, grid, author, checksum,
Obj(mu*) of a grid run's gap."""


def open_store(
    path: Path, comm: Communicator, system: System, create: NewFile | None, plan: tuple[int, int], sharded: bool = False
) -> CheckpointStore:
    """The run's checkpoint store: the file itself, or shards plus a master under MPI (created by rank 0).

    A file that was written sharded (``sharded``, as its reader found it) stays sharded, whatever the number
    of processes that continues it.
    """
    if comm.size == 1 and not (create is None and sharded):
        return CheckpointStore.create(path, *create, *plan) if create else CheckpointStore(path, *plan)
    if comm.rank == 0 and create:
        CheckpointStore.create(path, *create).write_metadata()
    comm.barrier()
    assert isinstance(system, Particles)
    start = system.offset
    return ShardedCheckpointStore(path, comm, start, start + system.positions.shape[0], system.total, plan[0])


@contextlib.contextmanager
def writing(path: Path, comm: Communicator) -> Iterator[tuple[Path, Callable[[], None]]]:
    """Hold the file's writer lock (rank 0 takes it for the job) for the run's whole life; yields the file
    to write (``path`` with its symbolic links resolved, so that a link is written through, not replaced) and
    the check to make before each write: that the lock is still held (:meth:`WriterLock.verify`; a no-op on
    the other ranks, whose shards rank 0's master names)."""
    lock, error = WriterLock(path), None
    if comm.rank == 0:
        try:
            lock.__enter__()
        except FileLockedError as e:
            error = str(e)
    error = comm.bcast(error)
    if error:
        raise FileLockedError(error)
    try:
        yield writer_path(path), (lock.verify if comm.rank == 0 else _nothing)
    finally:
        if comm.rank == 0:
            lock.__exit__(None, None, None)


def _nothing() -> None:
    pass


def write_outputs(checkpoint: Path, named: Path, formats: Sequence[str]) -> list[Path]:
    """Write the finished run in each of ``formats`` (``output.formats``), beside ``named`` (the checkpoint's path
    as the user gave it; ``checkpoint`` is the file itself, links resolved)."""
    written = []
    for name in formats:
        written.append(export(checkpoint, name, target_path(named, name)))
    return written


def check_output(path: Path) -> None:
    """Refuse outputs that are not files: a directory, a device, a fifo, an empty name."""
    if str(path) in ("", "."):
        raise ValueError("the output path is empty; give --out FILE.h5")
    if path.exists() and not path.is_file():
        raise ValueError(
            f"{str(path)!r} exists and is not a regular file (a directory, device or fifo); choose another --out"
        )
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory; give a file name")
