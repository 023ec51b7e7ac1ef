"""A run from a configuration, with its files: the pieces (data -> problem -> functional -> discretisation, from
:mod:`mfld.config.assembly`, the path the experiments take too), then observers and the checkpoint.

This module adds what a run on the command line needs around the pieces: the writer lock, the checkpoint
store, the observers (recorder, progress, frames), threads, resuming a file, ``mfld stationary``. The
assembly's functions are re-exported here (``build.build_problem``, ``build.build_system``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfld.config import Config, get, to_toml
from mfld.config.assembly import (
    DATA_KEYS,
    Data,
    build_functional,
    build_grid,
    build_problem,
    build_system,
    check_inputs,
    check_memory,
    fix_memory_budget,
    generate_data,
    memory_budget,
    memory_estimate,
    metrics_of,
    stationary,
    with_data_sizes,
)
from mfld.config.progress import SETTINGS
from mfld.config.typed import RunConfig, typed
from mfld.discretizations import loop
from mfld.discretizations.state import DensityState
from mfld.discretizations.system import System
from mfld.model import backend
from mfld.model.backend import to_host
from mfld.model.distributed import Communicator, Serial, shard, world
from mfld.model.functional import Functional
from mfld.model.problem import Problem
from mfld.storage import (
    CheckpointError,
    CheckpointReader,
    CheckpointStore,
    frame_bytes,
)
from mfld.storage.commit import check_room
from mfld.storage.lock import WriterLock, writer_path

from .files import NewFile, check_output, open_store, planned_rows, write_outputs, writing
from .observers import Checkpoints, Frames, Progress
from .threads import blas_threads, fix_threads

log = logging.getLogger("mfld")

__all__ = [
    "DATA_KEYS",
    "Data",
    "InMemory",
    "build_functional",
    "build_grid",
    "build_problem",
    "build_system",
    "check_inputs",
    "check_kept",
    "check_memory",
    "fix_memory_budget",
    "generate_data",
    "memory_budget",
    "memory_estimate",
    "metrics_of",
    "resume",
    "run_in_memory",
    "start",
    "stationary",
    "with_data_sizes",
    "write_stationary",
]


def _observers(
    config: Config | RunConfig,
    store: CheckpointStore | None,
    steps: int,
    resuming: bool,
    rank: int = 0,
    check: Callable[[], None] | None = None,
) -> list[loop.Observer]:
    """The run's observers: the observables' recorder, progress, and the checkpoint writer (``store``) or,
    without one, the frames kept in memory (:class:`Frames`)."""
    out = typed(config).output
    sink = store.add_observables if store is not None else None
    metrics = loop.Recorder(metrics_of, out.metrics_every, record_start=not resuming, sink=sink)
    shown = SETTINGS[out.progress] if rank == 0 else False
    progress = Progress(steps, shown, metrics=metrics)
    keep = Checkpoints(store, out.checkpoint_every, check) if store is not None else Frames(out.checkpoint_every)
    return [metrics, progress, keep]


def _run(system: System, steps: int, observers: list[loop.Observer], threads: int) -> None:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        loop.run(system, steps, observers)


def _prepare(config: Config, comm: Communicator | None = None) -> tuple[RunConfig, Data, Problem, Functional]:
    """The configuration (typed) with its data's sizes, the data, the problem and its functional (built once, this
    process's share under ``comm``), after the checks that cost nothing."""
    check_memory(config)
    data = generate_data(config)
    rc = typed(with_data_sizes(config, data))
    problem = build_problem(rc, data)
    return rc, data, problem, check_inputs(rc, problem, build_functional(rc, problem, comm))


def start(
    config: Config, path: str | Path | None = None, overwrite: bool = False, observers: Sequence[loop.Observer] = ()
) -> Path:
    """Run a configuration from the prior, writing its checkpoint file; returns the path.

    ``observers`` see every step after the run's own (recorder, progress, checkpoint writer).
    """
    path = Path(path if path is not None else typed(config).output.path)
    check_output(path)
    comm = world()
    rc, data, problem, functional = _prepare(fix_threads(fix_memory_budget(config, comm), comm), comm)
    with writing(path, comm) as (target, check):
        exists = comm.bcast(target.exists() if comm.rank == 0 else None)
        if exists and not overwrite:
            raise FileExistsError(
                f"{str(path)!r} exists; continue it with `mfld resume {path}`, choose another --out, or pass "
                "--overwrite"
            )
        system = build_system(rc, problem, comm=comm, functional=functional)
        create: NewFile = (
            to_toml(rc.tree),
            data,
            system.kind,
            system.functional.dim,
            getattr(system, "grid", None),
            rc.output.author,
            rc.output.checksum,
            getattr(system, "reference_objective", None),
        )
        steps = rc.time.steps
        plan = planned_rows(rc, 0, steps, resuming=False)
        if comm.rank == 0:  # the file gets room for every planned frame at step 0: refuse now what cannot fit
            check_room(target, plan[0] * frame_bytes(system.state()) * comm.size)
        store = open_store(target, comm, system, create, plan)
        # The file is written whole at the first commit, frame 0 with its record, before any step: a kill
        # before then leaves no file, one after it a file that resumes with the record of step 0.
        own = _observers(rc, store, steps, resuming=False, rank=comm.rank, check=check)
        _run(system, steps, [*own, *observers], blas_threads(rc.tree, comm.size))
        if comm.rank == 0:
            write_outputs(target, path, rc.output.formats)
    return path


@dataclass
class InMemory:
    """A run kept in memory (:func:`run_in_memory`): its configuration with the data's sizes, the data, the
    system at its last step, the observables' recorder, the frames kept at the steps a checkpoint would
    save, and whether a signal stopped it early."""

    config: Config
    data: Data
    system: System
    recorder: loop.Recorder
    frames: Frames
    interrupted: bool


RECORD_BYTES = 1024
"""About what one record of observables kept in memory takes (a dict of some 15 floats)."""


def check_kept(config: Config | RunConfig, frame: int) -> None:
    """Refuse, before the first step, an in-memory run whose kept frames (``frame`` bytes each) and records of
    observables would take more than half the memory available now, naming the keys that size them."""
    rc = typed(config)
    frames, records = planned_rows(rc, 0, rc.time.steps, resuming=False)
    need, available = frames * frame + records * RECORD_BYTES, backend.available_memory()
    if need > available // 2:
        raise MemoryError(
            f"this run kept in memory would hold {frames} frames ({frames * frame / 2**30:.3g} GiB; "
            f"time.steps = {rc.time.steps}, output.checkpoint_every = {rc.output.checkpoint_every}) and {records} "
            f"records of observables (output.metrics_every = {rc.output.metrics_every}), more than half the "
            f"{available / 2**30:.3g} GiB available: raise output.checkpoint_every or output.metrics_every, lower "
            "time.steps, or write the run to a file (out=..., mfld run)"
        )


def run_in_memory(config: Config, observers: Sequence[loop.Observer] = ()) -> InMemory:
    """Run a configuration from the prior with nothing written: the same steps and observables as :func:`start`.

    SIGINT or SIGTERM ends the run after the current step, its observers finished, as in a file run;
    the result says so (``interrupted``) instead of raising.
    """
    rc, data, problem, functional = _prepare(fix_threads(fix_memory_budget(config), Serial()))
    system = build_system(rc, problem, functional=functional)
    steps = rc.time.steps
    check_kept(rc, frame_bytes(system.state()))
    own = _observers(rc, None, steps, resuming=False)
    recorder, frames = own[-3], own[-1]  # after the solver restarts, if any
    assert isinstance(recorder, loop.Recorder) and isinstance(frames, Frames)
    try:
        _run(system, steps, [*own, *observers], blas_threads(rc.tree))
    except loop.Interrupted:
        return InMemory(rc.tree, data, system, recorder, frames, True)
    return InMemory(rc.tree, data, system, recorder, frames, False)


def resume(path: str | Path, steps: int | None = None, trust: bool = False) -> Path:
    """Continue the run in ``path`` from its last frame by ``steps`` steps (default: to ``time.steps``).

    ``trust`` admits a feature map that the file names by import path (code the file would choose).
    """
    comm = world()
    with writing(Path(path), comm) as (target, check):
        _resume(target, steps, trust, comm, check)
        if comm.rank == 0:
            write_outputs(target, Path(path), typed(CheckpointReader(target).config).output.formats)
    return Path(path)


def _resume(path: Path, steps: int | None, trust: bool, comm: Communicator, check: Callable[[], None]) -> None:
    reader, rc, snap, steps = agreed(comm, lambda: _continuation(path, steps, trust, comm))
    try:
        system = build_system(
            rc, build_problem(rc, snap.data, trust=trust), snap.state(), comm, reader.reference_objective
        )
    except ValueError as e:  # what the file holds cannot be continued (its noise state, its data, its box)
        raise CheckpointError(f"{str(path)!r} cannot be resumed: {e}") from None
    store = open_store(path, comm, system, None, planned_rows(rc, snap.step, steps, resuming=True), reader.sharded)
    observers = _observers(rc, store, steps, True, comm.rank, check)
    _run(system, steps, observers, blas_threads(rc.tree, comm.size))


def agreed(comm: Communicator, action: Callable[[], Any]) -> Any:
    """``action()`` on every process, which then agree: when any process fails (its rows of a damaged shard), every
    process raises that failure, named by its rank, instead of the others waiting for it in a collective."""
    try:
        result, error = action(), None
    except Exception as e:  # every failure must reach the other processes, whatever its type
        result, error = None, e
    if comm.size == 1:
        if error is not None:
            raise error
        return result
    reports = comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(rank, text) for rank, text in enumerate(reports) if text is not None]
    if failed:
        rank, text = failed[0]
        raise CheckpointError(f"process {rank} of {comm.size} could not continue the run: {text}")
    return result


def _continuation(path: Path, steps: int | None, trust: bool, comm: Communicator) -> tuple[Any, ...]:
    """What a resume continues from, read by this process alone (no collective: a failure here reaches the other
    processes through :func:`agreed`): the reader, configuration, snapshot (this process's rows, checked finite)
    and steps."""
    reader = CheckpointReader(path)
    if reader.kind == "stationary":
        raise CheckpointError(
            f"{str(path)!r} holds mu* from `mfld stationary`, not a run: there is nothing to resume; "
            "start the dynamics with `mfld run CONFIG`"
        )
    rc = typed(reader.config)
    check_memory(rc)  # the sizes the file declares, before reading its frame
    if comm.size > 1 and not reader.sharded:
        raise CheckpointError(
            f"{str(path)!r} was written by one process; resume it with one process (`mfld resume {path}` without "
            "mpiexec), or start the run again under mpiexec to have it sharded"
        )
    N = get(rc.tree, "particles.N")
    rows = slice(*shard(N, comm.rank, comm.size)) if comm.size > 1 else slice(None)
    snap = reader.snapshot(rows=rows)
    if not np.isfinite(snap.points).all():
        raise CheckpointError(
            f"{str(path)!r}: particles {rows.start or 0}:{rows.stop or N} of the frame at step {snap.step} hold NaN "
            "or infinite values (a damaged file or shard); resume a copy saved before"
        )
    if steps is None:
        steps = rc.time.steps - snap.step
        if steps <= 0:
            raise ValueError(
                f"{str(path)!r} already reached time.steps = {rc.time.steps}; pass --steps K to go further"
            )
    return reader, rc, snap, steps


def write_stationary(config: Config, path: str | Path | None = None, overwrite: bool = False) -> Path:
    """Solve for mu* on the configured grid and write it as a density frame (with the iteration history)."""
    path = Path(path if path is not None else typed(config).output.path)
    check_output(path)
    with WriterLock(path):
        target = writer_path(path)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{str(path)!r} exists; choose another --out or pass --overwrite")
        data = generate_data(config)
        rc = typed(with_data_sizes(config, data))
        problem = build_problem(rc, data)
        functional = build_functional(rc, problem)
        grid = build_grid(rc, functional)
        result = stationary(rc, functional, grid, verbose=True)
        store = CheckpointStore.create(
            target, to_toml(rc.tree), data, "stationary", functional.dim, grid, rc.output.author, rc.output.checksum
        )
        for k, (cert, obj) in enumerate(zip(result.history["certificate"], result.history["objective"], strict=True)):
            store.add_observables(k, float(k), {"certificate": cert, "objective": obj})
        store.commit(DensityState(to_host(result.density), 0, 0.0))
    return path
