"""The safeguarded mu* solver: it converges where the plain Anderson iteration diverged, never lets the merit rise
between accepted iterates, and says why it stopped, naming the keys that change it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfld.config import load_config
from mfld.config.assembly import build_functional, build_grid, build_problem, stationary
from mfld.discretizations.stationary import NotConvergedWarning, solve_stationary
from mfld.model.problem import Problem
from mfld.model.two_timescale import TwoTimescaleFunctional

ROUND = 8 * 2.2e-16


def relu_problem(lam: float, d: int = 1, n: int = 200, seed: int = 0) -> TwoTimescaleFunctional:
    """Issue 40's kind of data: y = 2 relu(x_1) + 0.1 noise, x ~ Unif[-3, 3]^d; tanh with bias, lam_a = lam_w = 1/4.
    The plain damped-Anderson iteration of 5d24e52 stalled here with its certificate near 1 (p = 2, lam = 0.01)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3, 3, (n, d))
    Y = (2 * np.maximum(X[:, 0], 0) + 0.1 * rng.standard_normal(n))[:, None]
    return TwoTimescaleFunctional(Problem(X, Y, "tanh_bias", lam, 0.25, 0.25))


def _grid(F: TwoTimescaleFunctional, cells: int):
    from mfld.discretizations.density import grid_for

    return grid_for(F, 8.0, cells)


def _merit_never_rises(history: dict[str, list[float]]) -> None:
    obj, cert = history["objective"], history["certificate"]
    for k in range(1, len(obj)):
        lower = obj[k] < obj[k - 1]
        level = obj[k] <= obj[k - 1] + ROUND * max(abs(obj[k - 1]), 1.0) and cert[k] < cert[k - 1]
        assert lower or level, (k, obj[k - 1], obj[k], cert[k - 1], cert[k])


def test_the_case_that_diverged_converges_at_the_defaults():
    F = relu_problem(0.01)
    result = solve_stationary(F, _grid(F, 64))
    assert result.converged and result.certificate < 1e-12
    assert result.evaluations <= 500 and len(result.history["certificate"]) == result.iterations + 1
    _merit_never_rises(result.history)
    # The certificate bounds the gap: a long run of the fixed point from mu* moves Obj by less than it.
    again = solve_stationary(F, _grid(F, 64), initial=result.density)
    assert abs(again.objective - result.objective) <= result.certificate + again.certificate + 1e-12


@given(
    lam=st.sampled_from([0.002, 0.01, 0.05, 0.2]),
    damping=st.floats(0.05, 1.0),
    memory=st.integers(0, 6),
    seed=st.integers(0, 3),
)
@settings(max_examples=12, deadline=None, database=None)
def test_the_merit_never_rises_between_accepted_iterates(lam, damping, memory, seed):
    F = relu_problem(lam, n=60, seed=seed)
    result = solve_stationary(F, _grid(F, 32), damping=damping, memory=memory, max_iter=300)
    _merit_never_rises(result.history)
    assert result.converged, (result.certificate, result.evaluations)
    assert all(0 < s <= damping for s in result.history["step"])


def _config(*extra: str) -> dict:
    base = ['discretization="grid"', 'data.target="single-index"', "data.d=1", "data.n=50", "grid.cells=48"]
    return load_config(None, [*base, "model.lam_a=1.0", "model.lam_w=1.0", *extra])


def _pieces(config):
    F = build_functional(config, build_problem(config))
    return F, build_grid(config, F)


def test_running_out_of_evaluations_names_every_way_out():
    config = _config("stationary.max_iter=3")
    with pytest.raises(RuntimeError) as caught:
        stationary(config, *_pieces(config))
    message = str(caught.value)
    assert "ran out of evaluations while still converging" in message
    for key in ("stationary.max_iter = 3", "stationary.tol", "stationary.damping", "grid.gap = false"):
        assert key in message, (key, message)


class _Rising:
    """A functional whose Obj rises with every evaluation: no step can lower the merit."""

    def __init__(self, base: TwoTimescaleFunctional) -> None:
        self.base, self.calls = base, 0
        self.problem, self.dim = base.problem, base.dim

    def __getattr__(self, name: str):
        return getattr(self.base, name)

    def energy(self, fit):
        self.calls += 1
        out = dict(self.base.energy(fit))
        out["G"] += 1e-3 * self.calls
        return out


def test_a_merit_that_no_step_lowers_stalls_keeps_the_start_and_names_every_way_out(monkeypatch):
    config = _config()
    F, grid = _pieces(config)
    with pytest.warns(NotConvergedWarning, match="stalled: no step lowers Obj"):
        result = solve_stationary(_Rising(F), grid)
    assert result.stalled and not result.converged and result.iterations == 0
    assert result.evaluations == 1 + 33  # the start, then one trial per halving of 0.5 to below 1e-10
    with pytest.warns(NotConvergedWarning):
        start = solve_stationary(F, grid, max_iter=1)  # the prior: the iterate kept
    np.testing.assert_array_equal(result.density, start.density)
    from mfld.config import assembly

    monkeypatch.setattr(assembly, "solve_stationary", lambda f, *a, **k: solve_stationary(_Rising(f), *a, **k))
    with pytest.raises(RuntimeError, match="it stalled: no step, down to a damping of 1e-10, lowers Obj") as caught:
        stationary(config, F, grid)
    for key in ("stationary.max_iter", "stationary.tol", "stationary.damping", "grid.gap = false"):
        assert key in str(caught.value)


def test_the_solve_logs_each_step_with_its_certificate_and_damping(caplog):
    config = _config()
    with caplog.at_level("INFO", logger="mfld"):
        result = stationary(config, *_pieces(config))
    lines = [r.getMessage() for r in caplog.records]
    steps = [line for line in lines if "mu*: step" in line]
    assert len(steps) == result.iterations + 1 and all("damping" in s and "lam KL" in s for s in steps)
    assert f"after {result.iterations} steps ({result.evaluations} evaluations" in lines[-1]
    assert math.isfinite(result.objective)


def test_on_a_terminal_a_bar_carries_the_iterations_and_their_time_left(caplog, capsys):
    config = _config('output.progress="on"')
    with caplog.at_level("INFO", logger="mfld"):
        result = stationary(config, *_pieces(config))
    err = capsys.readouterr().err
    # the bar: decades of the certificate from the first to stationary.tol, the last certificate and damping
    assert "mu*" in err and "decade" in err and f"certificate={result.certificate:.2e}" in err
    info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert not any("mu*: step" in line for line in info)  # at DEBUG: the bar shows them
    quiet = _config('output.progress="off"')
    stationary(quiet, *_pieces(quiet))
    assert "decade" not in capsys.readouterr().err
