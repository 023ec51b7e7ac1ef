"""Assemble a run from a configuration: problem -> functional -> discretisation -> observers.

This is the one place that knows every piece; the pieces know nothing of each
other beyond their interfaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mfld.discretizations.particles import Particles, rng_from_state

from . import loop
from .backend import get_backend
from .checkpoint import CheckpointReader, CheckpointStore
from .classical import make_functional
from .config import get, to_toml
from .datasets import make_dataset
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
    return make_functional(config["model"]["objective"], problem, config["particles"]["memory_budget_mb"] * 2**20)


def initial_positions(config: dict[str, Any], functional: Any, rng: np.random.Generator) -> np.ndarray:
    """Draws from the prior: ``w ~ N(0, I / lam_w)`` (and ``a ~ N(0, I / lam_a)`` for the classical objective)."""
    pb = functional.problem
    N = config["particles"]["N"]
    W = pb.sample_prior(N, rng)
    if functional.dim == pb.p:
        return W
    A = rng.standard_normal((N, functional.dim - pb.p)) / np.sqrt(pb.lam_a)
    return np.concatenate([A, W], axis=1)


def build_system(config: dict[str, Any], problem: Problem, snapshot: Any = None) -> Particles:
    """A fresh discretisation of the configuration, or one continuing a snapshot."""
    functional = build_functional(config, problem)
    eta, langevin = get(config, "time.eta"), get(config, "particles.langevin")
    if snapshot is None:
        rng = np.random.default_rng([config["seed"], 1])
        return Particles(functional, initial_positions(config, functional, rng), eta, rng, langevin)
    return Particles(
        functional, snapshot.points, eta, rng_from_state(snapshot.rng_state), langevin, snapshot.step, snapshot.time
    )


def metrics_of(system: Particles) -> dict[str, float]:
    """The observables of the system's current measure."""
    return measure_metrics(system.functional, system.fit(), system.entropy())


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
    store = CheckpointStore.create(path, to_toml(config), data, system.kind, system.functional.dim)
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
