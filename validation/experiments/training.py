"""Training runs for the experiments: particles with a few observables recorded along the way."""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from importlib import resources
from typing import Any

import numpy as np

from mfld.config import load_config
from mfld.config.assembly import DATA_KEYS, build_problem, build_system, with_data_sizes
from mfld.discretizations import loop
from mfld.discretizations.system import System
from mfld.model.backend import get_backend
from mfld.model.datasets import Dataset
from mfld.model.functional import Fit, Functional
from mfld.model.observables import Evaluation, evaluate

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
    data: Dataset,
    settings: Mapping[str, Any],
    steps: int,
    every: int,
    backend: str | None = None,
    observed: Iterable[str] = OBSERVED,
) -> dict[str, np.ndarray]:
    """Particles on ``data``, built as ``mfld run`` builds them (:mod:`mfld.config.assembly`) from ``settings``
    (dotted configuration keys over the default: ``model.lam``, ``particles.N``, ``time.eta``, ``seed``,
    ``model.label_noise``, ``particles.init``, ...), run ``steps`` steps recording the observables ``observed``
    (default :data:`OBSERVED`) every ``every`` steps (and at the ends).

    The particles start from the configured initial measure (the prior ``nu`` by default) drawn from the keyed
    noise of ``seed``, as a run of the same configuration does; ``model.label_noise = s > 0`` runs the label-noise
    procedure. They live on ``backend``, by default the one chosen with :func:`backend` (NumPy unless chosen).
    """
    return trained(data, settings, steps, every, backend, observed)[0]


def trained(
    data: Dataset,
    settings: Mapping[str, Any],
    steps: int,
    every: int,
    backend: str | None = None,
    observed: Iterable[str] = OBSERVED,
    extra: Mapping[str, Callable[[Functional, Fit], float]] | None = None,
) -> tuple[dict[str, np.ndarray], System]:
    """:func:`train`'s series, with ``extra`` measures of the functional and fit recorded beside the observables,
    and the trained system (to predict with it, say)."""
    names = tuple(observed)
    more = dict(extra or {})

    def record(s: System) -> dict[str, float]:
        fit = s.fit()
        out = evaluate(Evaluation(system.functional, fit), names)
        return {**out, **{k: float(f(system.functional, fit)) for k, f in more.items()}}

    arrays = {k: getattr(data, k) for k in DATA_KEYS}
    values = {**settings, "discretization": "particles", "time.steps": steps, "backend": backend or _BACKEND.get()}
    config = with_data_sizes(load_config(None, values=values), arrays)
    system = build_system(config, build_problem(config, arrays))
    recorder = loop.Recorder(record, every)
    loop.run(system, steps, [recorder])
    return recorder.series(), system


def run_settings(
    c: Mapping[str, Any], seed: int, label_noise: float = 0.0, init_sd: float | None = None
) -> dict[str, Any]:
    """The configuration keys of an experiment's training run: tanh with bias, ``c``'s ``N``, ``eta``, ``lam``,
    ``lam_a``, ``lam_w`` (and ``solve`` if it names one), ``seed``, the label-noise level, and the initial measure
    (the prior, or ``N(0, init_sd^2 I)``)."""
    out: dict[str, Any] = {
        "model.feature": "tanh_bias",
        "model.lam": c["lam"],
        "model.lam_a": c["lam_a"],
        "model.lam_w": c["lam_w"],
        "model.label_noise": label_noise,
        "particles.N": c["N"],
        "time.eta": c["eta"],
        "seed": seed,
    }
    if "solve" in c:
        out["particles.solve"] = c["solve"]
    if init_sd is not None:
        out.update({"particles.init": "gaussian", "particles.init_sd": init_sd})
    return out
