"""Training runs for the experiments: particles with a few observables recorded along the way."""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Iterator
from contextvars import ContextVar
from importlib import resources
from typing import Any

import numpy as np

from mfld.discretizations import loop
from mfld.discretizations.noise import as_noise
from mfld.discretizations.particles import Particles, initial_measure
from mfld.model.backend import get_backend
from mfld.model.label_noise import LabelNoiseDrift
from mfld.model.observables import Evaluation, evaluate
from mfld.model.two_timescale import TwoTimescaleFunctional

_BACKEND: ContextVar[str] = ContextVar("backend", default="numpy")


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Run the experiments' particle training on the array backend ``name`` (``"numpy"`` or ``"cupy"``)."""
    get_backend(name)  # refuse an unavailable backend before any work
    token = _BACKEND.set(name)
    try:
        yield
    finally:
        _BACKEND.reset(token)


OBSERVED = ("kernel_alignment", "parameter_alignment", "degrees_of_freedom", "train_loss", "U", "test_loss")


def current_backend() -> str:
    """The array backend chosen with :func:`backend`."""
    return _BACKEND.get()


def experiment_config(name: str, full: bool, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``[quick]`` or ``[full]`` table of ``data/experiments/<name>.toml``, with ``overrides`` set over it.

    An override must name a key of the table and keep its type (an int may stand for a float).
    """
    text = resources.files("mfld.data").joinpath(f"experiments/{name}.toml").read_text()
    config: dict[str, Any] = tomllib.loads(text)["full" if full else "quick"]
    for key, value in (overrides or {}).items():
        if key not in config:
            raise ValueError(f"{name} has no setting {key!r}; it has {', '.join(sorted(config))}")
        old = config[key]
        same = isinstance(value, type(old)) or (isinstance(old, float) and isinstance(value, int))
        if not same or isinstance(value, bool) != isinstance(old, bool):
            raise ValueError(f"{name}: {key} = {value!r} should be of type {type(old).__name__} like {old!r}")
        config[key] = float(value) if isinstance(old, float) else value
    return config


def train(
    functional: TwoTimescaleFunctional,
    N: int,
    eta: float,
    steps: int,
    seed: int,
    every: int,
    label_noise: float = 0.0,
    init_sd: float | None = None,
    backend: str | None = None,
) -> dict[str, np.ndarray]:
    """Run particles, recording :data:`OBSERVED` every ``every`` steps (and at the ends).

    They start from the prior ``nu`` (docs/theory.md §3), or from ``N(0, init_sd^2 I)`` when given;
    ``label_noise = s > 0`` runs the label-noise procedure. The particles live on ``backend``, by default the
    one chosen with :func:`backend` (NumPy unless chosen).
    """
    backend = backend or _BACKEND.get()
    if backend != "numpy":
        functional = TwoTimescaleFunctional(functional.problem.to(get_backend(backend)), solve=functional.solve)
    rng = np.random.default_rng([seed, N, 11])
    W0 = initial_measure(functional, rng.standard_normal((N, functional.dim)), init_sd)
    noise = as_noise(rng)
    drift = LabelNoiseDrift(functional, label_noise, noise.uniform) if label_noise > 0 else None
    system = Particles(functional, W0, eta, noise, drift=drift)
    recorder = loop.Recorder(lambda s: evaluate(Evaluation(functional, s.fit()), OBSERVED), every)
    loop.run(system, steps, [recorder])
    return recorder.series()
