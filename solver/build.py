"""Assemble a run from a configuration: problem -> functional -> discretisation -> observers.

This is the one place that knows every piece; the pieces know nothing of each
other beyond their interfaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mfld.discretizations.grid import FieldState, FiniteVolume, Grid, check_box, gaussian_density
from mfld.discretizations.particles import Particles, rng_from_state
from mfld.discretizations.spectral import FourierSpectral
from mfld.discretizations.stationary import StationaryResult, solve_stationary

from . import loop
from .backend import get_backend, to_host
from .checkpoint import CheckpointReader, CheckpointStore
from .classical import make_functional
from .config import get, to_toml
from .datasets import make_dataset
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


def build_functional(config: dict[str, Any], problem: Problem) -> Any:
    """The configured functional; for grids with label noise, its expectation ``G + (s^2/6n) df``."""
    functional = make_functional(
        config["model"]["objective"], problem, config["particles"]["memory_budget_mb"] * 2**20
    )
    s = config["model"]["label_noise"]
    if s > 0 and config["model"]["objective"] != "two-timescale":
        raise ValueError("model.label_noise needs model.objective = 'two-timescale'")
    if s > 0 and config["discretization"] != "particles":
        return ExpectedLabelNoiseFunctional(functional, s)
    return functional


def initial_positions(config: dict[str, Any], functional: Any, rng: np.random.Generator) -> np.ndarray:
    """Draws from the prior: ``w ~ N(0, I / lam_w)`` (and ``a ~ N(0, I / lam_a)`` for the classical objective)."""
    pb = functional.problem
    N = config["particles"]["N"]
    W = pb.sample_prior(N, rng)
    if functional.dim == pb.p:
        return W
    A = rng.standard_normal((N, functional.dim - pb.p)) / np.sqrt(pb.lam_a)
    return np.concatenate([A, W], axis=1)


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


def build_system(config: dict[str, Any], problem: Problem, snapshot: Any = None) -> Any:
    """A fresh discretisation of the configuration, or one continuing a snapshot."""
    functional = build_functional(config, problem)
    eta = get(config, "time.eta")
    kind = config["discretization"]
    if kind == "particles":
        langevin, s = get(config, "particles.langevin"), get(config, "model.label_noise")
        if snapshot is None:
            rng = np.random.default_rng([config["seed"], 1])
            return Particles(
                functional, initial_positions(config, functional, rng), eta, rng, langevin, label_noise=s
            )
        return Particles(
            functional, snapshot.points, eta, rng_from_state(snapshot.rng_state), langevin, snapshot.step,
            snapshot.time, label_noise=s,
        )
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


def _observers(config: dict[str, Any], store: CheckpointStore, steps: int, resuming: bool) -> list[Any]:
    out = config["output"]
    metrics = Metrics(metrics_of, store.add_observables, out["metrics_every"], record_start=not resuming)
    progress = Progress(steps, {"auto": None, "on": True, "off": False}[out["progress"]], metrics=metrics)
    return [metrics, progress, Checkpoints(store, out["checkpoint_every"])]


def start(config: dict[str, Any], path: str | Path | None = None, overwrite: bool = False) -> Path:
    """Run a configuration from the prior, writing its checkpoint file; returns the path."""
    path = Path(path or config["output"]["path"])
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} exists; continue it with `mfld resume {path}`, choose another --out, or pass --overwrite"
        )
    data = generate_data(config)
    problem = build_problem(config, data)
    system = build_system(config, problem)
    store = CheckpointStore.create(
        path, to_toml(config), data, system.kind, system.functional.dim, getattr(system, "grid", None)
    )
    steps = config["time"]["steps"]
    loop.run(system, steps, _observers(config, store, steps, resuming=False))
    return path


def resume(path: str | Path, steps: int | None = None) -> Path:
    """Continue the run in ``path`` from its last frame by ``steps`` steps (default: to ``time.steps``)."""
    reader = CheckpointReader(path)
    snap = reader.snapshot()
    config = reader.config
    if steps is None:
        steps = config["time"]["steps"] - snap.step
        if steps <= 0:
            raise ValueError(
                f"{str(path)!r} already reached time.steps = {config['time']['steps']}; pass --steps K to go further"
            )
    system = build_system(config, snap.problem, snap)
    loop.run(system, steps, _observers(config, CheckpointStore(path), steps, resuming=True))
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
