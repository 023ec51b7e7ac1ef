"""Assemble a run from a configuration: problem -> functional -> discretisation -> observers.

This is the one place that knows every piece; the pieces know nothing of each
other beyond their interfaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mfld.discretizations.grid import FieldState, FiniteVolume, Grid, check_box, gaussian_density
from mfld.discretizations.noise import KeyedNoise, noise_from_state
from mfld.discretizations.particles import Particles
from mfld.discretizations.spectral import FourierSpectral
from mfld.discretizations.stationary import StationaryResult, solve_stationary

from . import loop
from .backend import get_backend, to_host
from .checkpoint import CheckpointReader, CheckpointStore, ShardedCheckpointStore, is_sharded
from .classical import make_functional
from .config import get, to_toml
from .datasets import make_dataset
from .distributed import Serial, shard, world
from .label_noise import ExpectedLabelNoiseFunctional
from .metrics import measure_metrics
from .observers import Checkpoints, Metrics, Progress
from .problem import Problem

DATA_KEYS = ("X", "Y", "X_test", "Y_test", "relevant")


def generate_data(config: dict[str, Any]) -> dict[str, np.ndarray]:
    """The configuration's synthetic data set as ``{X, Y, X_test, Y_test, relevant}``."""
    c = config["data"]
    ds = make_dataset(
        c["target"], d=c["d"], n=c["n"], n_test=c["n_test"], noise=c["noise"], inputs=c["inputs"],
        link=c["link"], m=c["m"], frequency=c["frequency"], seed=config["seed"],
    )
    return {k: getattr(ds, k) for k in DATA_KEYS}


def build_problem(config: dict[str, Any], data: dict[str, np.ndarray] | None = None) -> Problem:
    """The :class:`Problem` of a configuration, on its backend and dtype."""
    data = generate_data(config) if data is None else data
    m = config["model"]
    pb = Problem(
        data["X"], data["Y"], m["feature"], m["lam"], m["lam_a"], m["lam_w"],
        data.get("X_test"), data.get("Y_test"), data.get("relevant"),
    )
    return pb.to(get_backend(config["backend"]), np.dtype(config["dtype"]))


def build_functional(config: dict[str, Any], problem: Problem, comm: Any = None) -> Any:
    """The configured functional; for grids with label noise, its expectation ``G + (s^2/6n) df``."""
    functional = make_functional(
        config["model"]["objective"], problem, config["particles"]["memory_budget_mb"] * 2**20, comm
    )
    s = config["model"]["label_noise"]
    if s > 0 and config["model"]["objective"] != "two-timescale":
        raise ValueError("model.label_noise needs model.objective = 'two-timescale'")
    if s > 0 and config["discretization"] != "particles":
        return ExpectedLabelNoiseFunctional(functional, s)
    return functional


def initial_positions(functional: Any, noise: KeyedNoise, start: int, stop: int) -> np.ndarray:
    """Particles ``start .. stop - 1`` of the prior: ``w ~ N(0, I / lam_w)`` (``a ~ N(0, I / lam_a)`` too
    for the classical objective), drawn from the keyed stream at step 0 so that any split gives the same."""
    pb = functional.problem
    Z = noise.normal(0, start, stop, functional.dim)
    T = functional.dim - pb.p
    return np.concatenate([Z[:, :T] / np.sqrt(pb.lam_a), Z[:, T:] / np.sqrt(pb.lam_w)], axis=1)


def prior_sd(functional: Any) -> list[float]:
    """Per-axis standard deviation of the prior: ``1/sqrt(lam_a)`` for ``a``, ``1/sqrt(lam_w)`` for ``w``."""
    pb = functional.problem
    return [pb.lam_a**-0.5] * (functional.dim - pb.p) + [pb.lam_w**-0.5] * pb.p


def build_grid(config: dict[str, Any], functional: Any) -> Grid:
    """The configured box, refused if it cannot hold the prior."""
    grid = Grid.box(config["grid"]["half_width"], config["grid"]["cells"], functional.dim)
    check_box(grid, prior_sd(functional))
    return grid


def stationary(config: dict[str, Any], functional: Any, grid: Grid, verbose: bool = False) -> StationaryResult:
    """The optimum mu* on the configured grid (fixed point of the proximal Gibbs map)."""
    s = config["stationary"]

    def report(it: int, cert: float, obj: float) -> None:
        print(f"  iteration {it:4d}   lam KL(mu || p_mu) = {cert:.3e}   Obj = {obj:.12g}")

    result = solve_stationary(
        functional, grid, tol=s["tol"], max_iter=s["max_iter"], damping=s["damping"], memory=s["memory"],
        callback=report if verbose else None,
    )
    if not result.converged:
        raise RuntimeError(
            f"the fixed-point iteration did not reach stationary.tol = {s['tol']:g} in {result.iterations} "
            f"iterations (certificate {result.certificate:.3e}); raise stationary.max_iter or lower stationary.damping"
        )
    return result


def build_system(config: dict[str, Any], problem: Problem, snapshot: Any = None, comm: Any = None) -> Any:
    """A fresh discretisation of the configuration, or one continuing a snapshot.

    With a communicator of several processes (particles only), this process gets its block of the particles.
    """
    comm = Serial() if comm is None else comm
    kind = config["discretization"]
    if comm.size > 1 and kind != "particles":
        raise ValueError(f"only particles can be split over MPI processes; run discretization = {kind!r} alone")
    functional = build_functional(config, problem, comm)
    eta = get(config, "time.eta")
    if kind == "particles":
        langevin, s = get(config, "particles.langevin"), get(config, "model.label_noise")
        N = config["particles"]["N"]
        start, stop = shard(N, comm.rank, comm.size)
        common = {"label_noise": s, "offset": start, "total": N}
        if snapshot is None:
            noise = KeyedNoise(config["seed"])
            W = initial_positions(functional, noise, start, stop)
            return Particles(functional, W, eta, noise, langevin, **common)
        return Particles(functional, snapshot.points, eta, noise_from_state(snapshot.rng_state), langevin,
                         snapshot.step, snapshot.time, **common)
    grid = build_grid(config, functional)
    reference = None
    if config["grid"]["gap"]:
        reference = stationary(config, functional, grid).objective
    common = {"edge_mass_warning": config["grid"]["edge_mass_warning"], "reference_objective": reference}
    if snapshot is None:
        density = gaussian_density(grid, np.zeros(grid.dim), np.diag(np.square(prior_sd(functional))))
        step, time, previous = 0, 0.0, None
    else:
        density, step, time, previous = snapshot.density, snapshot.step, snapshot.time, snapshot.previous
    if kind == "spectral":
        return FourierSpectral(functional, grid, density, eta, step=step, time=time, **common)
    return FiniteVolume(
        functional, grid, density, eta, config["grid"]["scheme"], previous, step=step, time=time, **common
    )


def metrics_of(system: Any) -> dict[str, float]:
    """The observables of the system's current measure (and a grid's certificate, gap, mass)."""
    out = measure_metrics(system.functional, system.fit(), system.entropy())
    if hasattr(system, "diagnostics"):
        out.update(system.diagnostics())
    return out


def _observers(config: dict[str, Any], store: CheckpointStore, steps: int, resuming: bool, rank: int = 0) -> list[Any]:
    out = config["output"]
    metrics = Metrics(metrics_of, store.add_observables, out["metrics_every"], record_start=not resuming)
    shown = {"auto": None, "on": True, "off": False}[out["progress"]] if rank == 0 else False
    progress = Progress(steps, shown, metrics=metrics)
    return [metrics, progress, Checkpoints(store, out["checkpoint_every"])]


def _store(path: Path, comm: Any, system: Any, create: tuple | None) -> CheckpointStore:
    """The run's checkpoint store: the file itself, or shards plus a master under MPI (created by rank 0).

    A file that was written sharded stays sharded, whatever the number of processes that continues it.
    """
    if comm.size == 1 and not (create is None and is_sharded(path)):
        return CheckpointStore.create(path, *create) if create else CheckpointStore(path)
    if comm.rank == 0 and create:
        CheckpointStore.create(path, *create)
    comm.barrier()
    start = system.offset
    return ShardedCheckpointStore(path, comm, start, start + system.positions.shape[0], system.total)


def start(config: dict[str, Any], path: str | Path | None = None, overwrite: bool = False) -> Path:
    """Run a configuration from the prior, writing its checkpoint file; returns the path."""
    path = Path(path or config["output"]["path"])
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} exists; continue it with `mfld resume {path}`, choose another --out, or pass --overwrite"
        )
    comm = world()
    if comm.size > 1:
        exists = comm.bcast(path.exists() if comm.rank == 0 else None)
        if exists and not overwrite:
            raise FileExistsError(f"{str(path)!r} exists; pass --overwrite or choose another --out")
    data = generate_data(config)
    problem = build_problem(config, data)
    system = build_system(config, problem, comm=comm)
    create = (to_toml(config), data, system.kind, system.functional.dim, getattr(system, "grid", None))
    store = _store(path, comm, system, create)
    steps = config["time"]["steps"]
    loop.run(system, steps, _observers(config, store, steps, resuming=False, rank=comm.rank))
    return path


def resume(path: str | Path, steps: int | None = None) -> Path:
    """Continue the run in ``path`` from its last frame by ``steps`` steps (default: to ``time.steps``)."""
    comm = world()
    reader = CheckpointReader(path)
    config = reader.config
    rows = slice(*shard(config["particles"]["N"], comm.rank, comm.size)) if comm.size > 1 else slice(None)
    snap = reader.snapshot(rows=rows)
    if steps is None:
        steps = config["time"]["steps"] - snap.step
        if steps <= 0:
            raise ValueError(
                f"{str(path)!r} already reached time.steps = {config['time']['steps']}; pass --steps K to go further"
            )
    system = build_system(config, snap.problem, snap, comm)
    loop.run(system, steps, _observers(config, _store(Path(path), comm, system, None), steps, True, comm.rank))
    return Path(path)


def write_stationary(config: dict[str, Any], path: str | Path | None = None, overwrite: bool = False) -> Path:
    """Solve for mu* on the configured grid and write it as a density frame (with the iteration history)."""
    path = Path(path or config["output"]["path"])
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; choose another --out or pass --overwrite")
    data = generate_data(config)
    problem = build_problem(config, data)
    functional = build_functional(config, problem)
    grid = build_grid(config, functional)
    result = stationary(config, functional, grid, verbose=True)
    store = CheckpointStore.create(path, to_toml(config), data, "stationary", functional.dim, grid)
    for k, (cert, obj) in enumerate(zip(result.history["certificate"], result.history["objective"], strict=True)):
        store.add_observables(k, float(k), {"certificate": cert, "objective": obj})
    store.commit(FieldState(to_host(result.density), 0, 0.0))
    return path
