"""Training runs for the experiments: particles with a few observables recorded along the way."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

import numpy as np

from mfld.discretizations.particles import Particles
from mfld.solver.functional import degrees_of_freedom, kernel_alignment, parameter_alignment
from mfld.solver.metrics import half_mse


def experiment_config(name: str, full: bool) -> dict[str, Any]:
    """The ``[quick]`` or ``[full]`` table of ``data/experiments/<name>.toml``."""
    text = resources.files("mfld.data").joinpath(f"experiments/{name}.toml").read_text()
    return tomllib.loads(text)["full" if full else "quick"]


def observe(functional: Any, fit: Any) -> dict[str, float]:
    """Kernel alignment A, parameter alignment P, df, train and test loss of a fit."""
    pb = functional.problem
    out = {
        "kernel_alignment": kernel_alignment(functional, fit),
        "parameter_alignment": parameter_alignment(pb, fit.points, fit.weights),
        "degrees_of_freedom": degrees_of_freedom(functional, fit),
        "train_loss": half_mse(fit.pred, pb.Y),
        "U": fit.U,
    }
    if pb.X_test is not None:
        out["test_loss"] = half_mse(functional.predict(fit, pb.X_test), pb.Y_test)
    return out


def train(functional: Any, N: int, eta: float, steps: int, seed: int, every: int,
          label_noise: float = 0.0, init_sd: float | None = None) -> dict[str, np.ndarray]:
    """Run particles, recording :func:`observe` every ``every`` steps (and at the ends).

    They start from the prior ``nu`` (THEORY.md section 3), or from ``N(0, init_sd^2 I)`` when given.
    """
    rng = np.random.default_rng([seed, N, 11])
    if init_sd is None:
        W0 = functional.problem.sample_prior(N, rng)
    else:
        W0 = rng.standard_normal((N, functional.problem.p)) * init_sd
    system = Particles(functional, W0, eta, rng, label_noise=label_noise)
    records = [{"time": 0.0, **observe(functional, system.fit())}]
    for k in range(1, steps + 1):
        system.step()
        if k % every == 0 or k == steps:
            records.append({"time": system.time, **observe(functional, system.fit())})
    return {key: np.array([r[key] for r in records]) for key in records[0]}
