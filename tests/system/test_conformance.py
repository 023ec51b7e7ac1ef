"""Every registered objective x discretisation x time scheme runs through the one assembly path."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from conftest import SMALL_ANY
from mfld.config import SCHEMA, get, load_config
from mfld.config.typed import discretization_options
from mfld.discretizations import loop
from mfld.discretizations.kinds import DISCRETIZATIONS
from mfld.discretizations.state import DensityState
from mfld.model.objectives import OBJECTIVES
from mfld.model.observables import OBSERVABLES
from mfld.solver import build

SMALL = SMALL_ANY


def _cases() -> list[tuple[str, str, str, float]]:
    out = []
    for objective in OBJECTIVES:
        for kind, spec in DISCRETIZATIONS.items():
            for scheme in spec.schemes:
                for s in (0.0, 0.3):
                    out.append((objective, kind, scheme, s))
    return out


@pytest.mark.parametrize("objective, kind, scheme, s", _cases())
def test_every_combination_steps_and_observes(objective, kind, scheme, s):
    spec = DISCRETIZATIONS[kind]
    overrides = [*SMALL, f'model.objective="{objective}"', f'discretization="{kind}"', f"model.label_noise={s}"]
    overrides.append(f'{spec.keys()["scheme"]}="{scheme}"')
    config = load_config(None, overrides)
    problem = build.build_problem(config)
    if s > 0 and objective != "two-timescale":
        with pytest.raises(ValueError, match="model.label_noise needs model.objective = 'two-timescale'"):
            build.build_system(config, problem)
        return
    system = build.build_system(config, problem)
    recorder = loop.Recorder(build.metrics_of)
    loop.run(system, 3, [recorder])
    assert system.step_count == 3 and math.isclose(system.time, 3 * 0.05)
    last = recorder.records[-1][2]
    assert set(OBSERVABLES) <= set(last)
    finite = {k for k, v in last.items() if np.isfinite(v)}
    # Only what a measure without a second layer lacks may be NaN: the prior objective has no predictor.
    assert set(last) - finite <= ({"train_loss", "test_loss"} if objective == "prior" else set()), last
    points, weights = system.measure()
    assert abs(float(np.sum(weights)) - 1.0) < 1e-12
    assert points.shape[1] == system.functional.dim
    state = system.state()
    assert (state.step, state.time) == (system.step_count, system.time)
    entry = spec.schemes[scheme]  # a function keeps no levels; a class says how many it keeps
    assert len(state.history) == (entry.levels if isinstance(entry, type) else 0)
    measure = state.density if isinstance(state, DensityState) else state.positions
    assert all(h.shape == measure.shape for h in state.history)


@pytest.mark.parametrize(
    "kind, scheme, levels",
    [("grid", "bdf2", 2), ("grid", "implicit-euler", 1), ("spectral", "sbdf2", 3), ("particles", "euler-maruyama", 1)],
)
def test_a_saved_history_of_the_wrong_length_is_refused_by_the_scheme(kind, scheme, levels):
    config = load_config(
        None, [*SMALL, f'discretization="{kind}"', f'{DISCRETIZATIONS[kind].keys()["scheme"]}="{scheme}"']
    )
    problem = build.build_problem(config)
    state = build.build_system(config, problem).state()
    measure = state.density if isinstance(state, DensityState) else state.positions
    altered = dataclasses.replace(state, history=(measure,) * levels)
    with pytest.raises(ValueError, match=f"= '{scheme}' continues from .* earlier level.*the saved state has {levels}"):
        build.build_system(config, problem, altered)


def test_a_new_particle_scheme_is_one_registration():
    """A scheme registered in PARTICLE_SCHEMES is accepted by the configuration and run by `mfld run`'s path."""
    from mfld.discretizations.particles import PARTICLE_SCHEMES

    calls = []

    def heun(W, q, drift, eta, lam, xi, step, fit=None):
        calls.append(step)
        b0 = drift(W, q, step, fit)
        b1 = drift(W + eta * b0, q, step)
        out = W + 0.5 * eta * (b0 + b1)
        return out if xi is None else out + (2.0 * eta * lam) ** 0.5 * xi

    with PARTICLE_SCHEMES.registered("heun", heun, "Heun's predictor-corrector"):
        config = load_config(None, [*SMALL, 'particles.scheme="heun"', "particles.langevin=false"])
        system = build.build_system(config, build.build_problem(config))
        loop.run(system, 2)
        assert calls == [1, 2]
        # Noiseless Heun is second order: closer to a fine Euler reference than one Euler step of the same size.
        fine = build.build_system(
            load_config(None, [*SMALL, "particles.langevin=false", "time.eta=0.00078125"]), build.build_problem(config)
        )
        euler = build.build_system(load_config(None, [*SMALL, "particles.langevin=false"]), build.build_problem(config))
        loop.run(fine, 128)
        loop.run(euler, 2)
        assert np.abs(system.positions - fine.positions).max() < 0.1 * np.abs(euler.positions - fine.positions).max()


def test_the_step_size_check_is_the_schemes():
    """A scheme that declares check_step refuses by its own limit, before any work; one that does not has the
    explicit step's (eta lam_w_bar < 1)."""
    from mfld.discretizations.particles import PARTICLE_SCHEMES, euler_maruyama

    class Cautious:
        levels = 0

        def __init__(self, history):
            pass

        __call__ = staticmethod(euler_maruyama)

        @staticmethod
        def check_step(problem, eta):
            if eta > 0.05:
                raise ValueError(f"particles.scheme = 'cautious' takes time.eta <= 0.05, got {eta}")

    def plain(W, q, drift, eta, lam, xi, step, fit=None):
        return euler_maruyama(W, q, drift, eta, lam, xi, step, fit)

    with (
        PARTICLE_SCHEMES.registered("cautious", Cautious, "a scheme with a limit"),
        PARTICLE_SCHEMES.registered("plain", plain, "Euler-Maruyama, renamed"),
    ):
        ok = load_config(None, [*SMALL, 'particles.scheme="cautious"', "time.eta=0.05"])
        build.build_system(ok, build.build_problem(ok))
        too_large = load_config(None, [*SMALL, 'particles.scheme="cautious"', "time.eta=0.1"])
        with pytest.raises(ValueError, match="'cautious' takes time.eta <= 0.05, got 0.1"):
            build.check_inputs(too_large, build.build_problem(too_large))  # the refusal made before any work
        unstable = load_config(None, [*SMALL, 'particles.scheme="plain"', "time.eta=50"])
        with pytest.raises(ValueError, match="time.eta = 50.* too large for stability"):
            build.build_system(unstable, build.build_problem(unstable))


@pytest.mark.parametrize("kind", list(DISCRETIZATIONS))
def test_each_option_of_a_discretisation_is_a_configuration_key(kind):
    """A registered discretisation is built from its options alone: every field names a key the configuration
    has, and the options read from the default configuration rebuild it."""
    spec = DISCRETIZATIONS[kind]
    assert set(spec.keys().values()) <= set(SCHEMA), sorted(set(spec.keys().values()) - set(SCHEMA))
    config = load_config(None, [*SMALL, f'discretization="{kind}"'])
    options = discretization_options(config)
    assert isinstance(options, spec.options)
    assert all(getattr(options, name) == get(config, key) for name, key in spec.keys().items())
