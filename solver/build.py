"""Assemble a run from a configuration: problem -> functional -> discretisation -> observers.

This is the one place that knows every piece and how they connect; each piece sees
the others only through their interfaces. What a configuration may name comes from the
registries (:data:`~mfld.model.objectives.OBJECTIVES`,
:data:`~mfld.discretizations.kinds.DISCRETIZATIONS`, ...).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfld.config import Config, get, to_toml
from mfld.config.typed import RunConfig, typed
from mfld.discretizations import loop
from mfld.discretizations.density import grid_for
from mfld.discretizations.kinds import DISCRETIZATIONS
from mfld.discretizations.mesh import Grid
from mfld.discretizations.state import DensityState, ParticleState
from mfld.discretizations.stationary import NotConvergedWarning, StationaryResult, solve_stationary
from mfld.discretizations.system import System
from mfld.model.backend import get_backend, to_host
from mfld.model.datasets import make_dataset, read_dataset
from mfld.model.distributed import Communicator, Serial, shard, world
from mfld.model.features import get_feature_map
from mfld.model.functional import Functional
from mfld.model.objectives import OBJECTIVES, make_functional
from mfld.model.observables import Evaluation, evaluate
from mfld.model.problem import Problem
from mfld.storage import (
    CheckpointError,
    CheckpointReader,
    CheckpointStore,
    frame_bytes,
)
from mfld.storage.commit import available_memory, check_room
from mfld.storage.lock import WriterLock, writer_path

from .files import Data, NewFile, check_output, open_store, planned_rows, write_outputs, writing
from .observers import Checkpoints, Frames, Progress
from .threads import blas_threads, fix_threads

log = logging.getLogger("mfld")
DATA_KEYS = ("X", "Y", "X_test", "Y_test", "relevant")


def generate_data(config: Config | RunConfig) -> Data:
    """The configuration's data as ``{X, Y, X_test, Y_test, relevant}``: read from ``data.source``, or generated."""
    rc = typed(config)
    c = rc.data
    if c.source:
        ds = read_dataset(c.source, c.x_columns, c.y_columns, c.test_source or None)
    else:
        ds = make_dataset(
            c.target,
            d=c.d,
            n=c.n,
            n_test=c.n_test,
            noise=c.noise,
            inputs=c.inputs,
            link=c.link,
            m=c.m,
            frequency=c.frequency,
            seed=rc.run.seed,
        )
    return {k: getattr(ds, k) for k in DATA_KEYS}


def with_data_sizes(config: Config, data: Data) -> Config:
    """The configuration with ``data.d``, ``data.n`` (and ``data.n_test``) those of the data, as stored in files."""
    out = {**config, "data": dict(config["data"])}
    out["data"]["n"], out["data"]["d"] = (int(v) for v in data["X"].shape)
    if data.get("X_test") is not None:
        out["data"]["n_test"] = int(data["X_test"].shape[0])
    return out


def build_problem(
    config: Config | RunConfig, data: Data | None = None, backend: str | None = None, trust: bool = True
) -> Problem:
    """The :class:`Problem` of a configuration on ``backend`` (default: the configured one), in its dtype.

    To analyse a saved run on another machine, pass the data read from its file
    and the backend of this machine: ``build_problem(snap.config, snap.data, backend="numpy")``.
    ``trust = False`` (configurations read from files) refuses feature maps named by import path.
    """
    rc = typed(config)
    data = generate_data(rc) if data is None else data
    m = rc.model
    pb = Problem(
        data["X"],
        data["Y"],
        get_feature_map(m.feature, allow_import=trust),
        m.lam,
        m.lam_a,
        m.lam_w,
        data.get("X_test"),
        data.get("Y_test"),
        data.get("relevant"),
    )
    return pb.to(get_backend(rc.run.backend if backend is None else backend), np.dtype(rc.run.dtype))


def build_functional(config: Config | RunConfig, problem: Problem, comm: Communicator | None = None) -> Functional:
    """The configured functional, built with its objective's options; for densities with label noise, its
    expectation ``G + (s^2/6n) df``.

    Particles run the label-noise procedure itself (:meth:`~mfld.discretizations.particles.Particles.build`).
    """
    rc = typed(config)
    density = DISCRETIZATIONS[rc.run.discretization].density
    return make_functional(
        rc.model.objective,
        problem,
        memory_budget(rc),
        comm,
        label_noise=rc.model.label_noise,
        options=rc.objective,
        expectation=density,
    )


def memory_budget(config: Config | RunConfig, processes: int = 1) -> int:
    """Bytes one chunk of particles' temporaries may take: ``particles.memory_budget_mb``, or for 0 half the
    memory available now shared among ``processes`` (at least 64 MiB)."""
    mb = get(typed(config).tree, "particles.memory_budget_mb")
    if mb > 0:
        return int(mb) * 2**20
    return max(64 * 2**20, available_memory() // (2 * processes))


def fix_memory_budget(config: Config, comm: Communicator | None = None) -> Config:
    """The configuration with ``particles.memory_budget_mb = 0`` replaced by the budget chosen now (rank 0's, on
    every process): the file stores it, so that a resume chunks the particles exactly as the run did and stays
    bit-identical wherever it runs."""
    if config["particles"]["memory_budget_mb"] > 0:
        return config
    comm = Serial() if comm is None else comm
    chosen = comm.bcast(memory_budget(config, comm.size) // 2**20 if comm.rank == 0 else 0)
    return {**config, "particles": {**config["particles"], "memory_budget_mb": chosen}}


def build_grid(config: Config | RunConfig, functional: Functional) -> Grid:
    """The box of ``grid.half_width`` and ``grid.cells``, refused if it cannot hold the prior."""
    tree = typed(config).tree
    return grid_for(functional, get(tree, "grid.half_width"), get(tree, "grid.cells"))


def stationary(
    config: Config | RunConfig, functional: Functional, grid: Grid, verbose: bool = False
) -> StationaryResult:
    """The optimum mu* on the configured grid (fixed point of the proximal Gibbs map)."""
    s = typed(config).stationary

    def report(it: int, cert: float, obj: float) -> None:
        log.info(f"  iteration {it:4d}   lam KL(mu || p_mu) = {cert:.3e}   Obj = {obj:.12g}")

    with warnings.catch_warnings():  # refused below with the configuration's key names instead
        warnings.simplefilter("ignore", NotConvergedWarning)
        result = solve_stationary(
            functional,
            grid,
            tol=s.tol,
            max_iter=s.max_iter,
            damping=s.damping,
            memory=s.memory,
            callback=report if verbose else None,
        )
    if not result.converged:
        raise RuntimeError(
            f"the fixed-point iteration did not reach stationary.tol = {s.tol:g} in {result.iterations} "
            f"iterations (certificate {result.certificate:.3e}); raise stationary.max_iter or lower stationary.damping"
        )
    return result


def build_system(
    config: Config | RunConfig,
    problem: Problem,
    state: ParticleState | DensityState | None = None,
    comm: Communicator | None = None,
    reference_objective: float | None = None,
    functional: Functional | None = None,
) -> System:
    """A fresh discretisation of the configuration, or one continuing a saved state: the registered
    discretisation builds itself from its options, on ``functional`` (built here when not given).

    With a communicator of several processes (particles only), this process gets its block of the particles.
    A density run with ``grid.gap`` solves for Obj(mu*) unless ``reference_objective`` gives it (a resume
    reads it from its file).
    """
    rc = typed(config)
    comm = Serial() if comm is None else comm
    built = build_functional(rc, problem, comm) if functional is None else functional

    def optimum(grid: Grid) -> float:
        return stationary(rc, built, grid).objective if reference_objective is None else reference_objective

    return DISCRETIZATIONS[rc.run.discretization].build(rc.discretization, built, state, comm, optimum)


def memory_estimate(config: Config | RunConfig) -> dict[str, int]:
    """Bytes the largest arrays of a run will take, by the configuration key that sizes them (float64): the data
    (X and X_test) and what the discretisation says of its own (its registry entry's ``memory``)."""
    rc = typed(config)
    c, item = rc.data, 8
    n, d, n_test = c.n, c.d, c.n_test
    m = rc.model
    # The feature map says the dimension of w (one named by import path is not imported before it is trusted:
    # d + 1 then); an objective whose points carry more (the classical (a, w)) says so.
    tasks = len(c.y_columns) if c.source else 1
    try:
        p = get_feature_map(m.feature, allow_import=False).dim(d)
    except ValueError:
        p = d + 1
    p = getattr(OBJECTIVES[m.objective], "dim_of", lambda p, T: p)(p, tasks)
    out = {"data.n": item * n * d, "data.n_test": item * n_test * d}
    spec = DISCRETIZATIONS[rc.run.discretization]
    for key, size in spec.memory(rc.discretization, n, n_test, p, memory_budget(rc)).items():
        out[key] = out.get(key, 0) + size
    return out


def check_memory(config: Config | RunConfig) -> None:
    """Refuse, before allocating, a run whose arrays cannot fit in the memory available, naming the key."""
    estimate = memory_estimate(config)
    total, available = sum(estimate.values()), available_memory()
    if total > available:
        key = max(estimate, key=estimate.__getitem__)
        value = get(typed(config).tree, key)
        raise MemoryError(
            f"this run needs about {total / 2**30:.3g} GiB, more than the {available / 2**30:.3g} GiB available; "
            f"most of it ({estimate[key] / 2**30:.3g} GiB) comes from {key} = {value}: reduce it"
        )


def check_inputs(config: Config | RunConfig, problem: Problem, functional: Functional | None = None) -> Functional:
    """The cheap checks of a configuration against its problem (box, dimension, step size), before any work, by
    its discretisation on its functional (built here when not given); returns the functional."""
    rc = typed(config)
    functional = build_functional(rc, problem) if functional is None else functional
    DISCRETIZATIONS[rc.run.discretization].check(rc.discretization, functional)
    return functional


def metrics_of(system: System) -> dict[str, float]:
    """The observables of the system's current measure and the discretisation's diagnostics."""
    out = evaluate(Evaluation(system.functional, system.fit(), system.entropy()))
    out.update(system.diagnostics())
    return out


def _observers(
    config: Config | RunConfig, store: CheckpointStore | None, steps: int, resuming: bool, rank: int = 0
) -> list[loop.Observer]:
    """The run's observers: the observables' recorder, progress, and the checkpoint writer (``store``) or,
    without one, the frames kept in memory (:class:`Frames`)."""
    out = typed(config).output
    sink = store.add_observables if store is not None else None
    metrics = loop.Recorder(metrics_of, out.metrics_every, record_start=not resuming, sink=sink)
    shown = {"auto": None, "on": True, "off": False}[out.progress] if rank == 0 else False
    progress = Progress(steps, shown, metrics=metrics)
    keep = Checkpoints(store, out.checkpoint_every) if store is not None else Frames(out.checkpoint_every)
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
    with writing(path, comm) as target:
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
        own = _observers(rc, store, steps, resuming=False, rank=comm.rank)
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


def run_in_memory(config: Config, observers: Sequence[loop.Observer] = ()) -> InMemory:
    """Run a configuration from the prior with nothing written: the same steps and observables as :func:`start`.

    SIGINT or SIGTERM ends the run after the current step, its observers finished, as in a file run;
    the result says so (``interrupted``) instead of raising.
    """
    rc, data, problem, functional = _prepare(fix_threads(fix_memory_budget(config), Serial()))
    system = build_system(rc, problem, functional=functional)
    steps = rc.time.steps
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
    with writing(Path(path), comm) as target:
        _resume(target, steps, trust, comm)
        if comm.rank == 0:
            write_outputs(target, Path(path), typed(CheckpointReader(target).config).output.formats)
    return Path(path)


def _resume(path: Path, steps: int | None, trust: bool, comm: Communicator) -> None:
    reader = CheckpointReader(path)
    if reader.kind == "stationary":
        raise CheckpointError(
            f"{str(path)!r} holds mu* from `mfld stationary`, not a run: there is nothing to resume; "
            "start the dynamics with `mfld run CONFIG`"
        )
    rc = typed(reader.config)
    check_memory(rc)  # the sizes the file declares, before reading its frame
    if comm.size > 1 and not reader.sharded:  # every rank reads this and stops alike: no rank waits in a collective
        raise CheckpointError(
            f"{str(path)!r} was written by one process; resume it with one process (`mfld resume {path}` without "
            "mpiexec), or start the run again under mpiexec to have it sharded"
        )
    N = get(rc.tree, "particles.N")
    rows = slice(*shard(N, comm.rank, comm.size)) if comm.size > 1 else slice(None)
    snap = reader.snapshot(rows=rows)
    if steps is None:
        steps = rc.time.steps - snap.step
        if steps <= 0:
            raise ValueError(
                f"{str(path)!r} already reached time.steps = {rc.time.steps}; pass --steps K to go further"
            )
    try:
        system = build_system(
            rc, build_problem(rc, snap.data, trust=trust), snap.state(), comm, reader.reference_objective
        )
    except ValueError as e:  # what the file holds cannot be continued (its noise state, its data, its box)
        raise CheckpointError(f"{str(path)!r} cannot be resumed: {e}") from None
    store = open_store(path, comm, system, None, planned_rows(rc, snap.step, steps, resuming=True), reader.sharded)
    observers = _observers(rc, store, steps, True, comm.rank)
    _run(system, steps, observers, blas_threads(rc.tree, comm.size))


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
