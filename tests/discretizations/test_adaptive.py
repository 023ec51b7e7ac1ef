"""Error-controlled steps of the density solvers (``time.adaptive``): the order the pair promises, mass, positivity,
rejections that leave no trace, and the refusals that name their keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_grid import COV0, MEAN0, T_END, ou, ou_exact

from mfld.config import load_config
from mfld.config.assembly import build_problem, check_inputs
from mfld.discretizations import loop
from mfld.discretizations.adaptive import Controller, StepControl, advance, attempt
from mfld.discretizations.grid import FiniteVolume
from mfld.discretizations.mesh import Grid, gaussian_density
from mfld.discretizations.spectral import FourierSpectral
from mfld.validation.problems import low_dim_functional

TOLS = (0.02, 0.01, 0.005)


def adaptive_ou(cls: type, tol: float) -> FiniteVolume | FourierSpectral:
    grid = Grid.box(2.5, 100, 1)
    system = cls(ou(1), grid, gaussian_density(grid, MEAN0[:1], COV0[:1, :1]), 1e-3, control=StepControl(tol, 10.0))
    loop.run(system, until=T_END)
    return system


@pytest.mark.parametrize("cls, reference", [(FiniteVolume, "bdf2"), (FourierSpectral, "sbdf2")])
def test_the_error_at_T_falls_with_the_tolerance_at_order_two(cls, reference):
    # Steps h ~ tol, local errors O(h^3) after extrapolation: the error at T is O(tol^2). The reference removes
    # the space error (same grid, a second-order scheme at a step far below the adaptive ones).
    grid = Grid.box(2.5, 100, 1)
    ref = cls(ou(1), grid, gaussian_density(grid, MEAN0[:1], COV0[:1, :1]), T_END / 2000, reference)
    loop.run(ref, until=T_END)
    runs = [adaptive_ou(cls, tol) for tol in TOLS]
    assert all(r.time == pytest.approx(T_END, abs=1e-12) for r in runs)  # the last step lands on T
    errors = [float(np.max(np.abs(r.density - ref.density))) for r in runs]
    observed = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert all(1.6 < o < 2.4 for o in observed), (errors, observed)
    # The whole error (time and space, against the exact solution) is no worse than the time error's estimate
    # allows on top of the grid's: the adaptive run is a valid solution of the PDE.
    assert (
        float(np.max(np.abs(runs[-1].density - ou_exact(grid, T_END))))
        < 2 * float(np.max(np.abs(ref.density - ou_exact(grid, T_END)))) + errors[-1]
    )


def test_adaptive_steps_bound_the_splitting_error_with_the_time_error():
    # A non-separable potential (the nonlinear problem, a correlated start): the splitting factors do not commute.
    F, grid, T = low_dim_functional(2), Grid.box(6.0, 24, 2), 1.0
    m0 = gaussian_density(grid, [1.0, -1.0], np.array([[1.0, 0.9], [0.9, 1.0]]))

    def l1(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sum(np.abs(a - b)) * grid.cell_volume)

    ref = FiniteVolume(F, grid, m0, T / 400, "bdf2", linear_solver="direct")
    loop.run(ref, until=T)
    errors, runs = [], []
    for tol in TOLS:
        run = FiniteVolume(F, grid, m0, 0.05, linear_solver="splitting", control=StepControl(tol, 10.0))
        loop.run(run, until=T)
        errors.append(l1(run.density, ref.density))
        runs.append(run)
    observed = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert all(1.6 < o < 2.4 for o in observed), (errors, observed)  # as the exact solve's (the test above)
    # The splitting error is there to be controlled: at the finest run's mean step, split and exact fixed steps
    # differ by far more than the adaptive run's whole error.
    eta = T / runs[-1].step_count
    split, exact = (FiniteVolume(F, grid, m0, eta, linear_solver=name) for name in ("splitting", "direct"))
    loop.run(split, until=T)
    loop.run(exact, until=T)
    assert l1(split.density, exact.density) > 10 * errors[-1], (l1(split.density, exact.density), errors)


@pytest.mark.parametrize("cls", [FiniteVolume, FourierSpectral])
def test_mass_to_round_off_and_positivity_on_the_nonlinear_problem(cls):
    F = low_dim_functional(2)
    grid = Grid.box(6.0, 24, 2)
    system = cls(F, grid, gaussian_density(grid, [0.0, 0.0], np.eye(2)), 0.05, control=StepControl(0.02, 10.0))
    for _ in range(15):
        system.step()
        assert abs(system.diagnostics()["mass"] - 1.0) < 1e-12
        if cls is FiniteVolume:
            assert system.diagnostics()["min_density"] >= 0.0
    assert system.controller.last > 0.05  # the controller grew the step from time.eta


def test_a_rejected_attempt_leaves_no_trace():
    F = low_dim_functional(1)
    grid = Grid.box(6.0, 64, 1)
    m0 = gaussian_density(grid, [0.0], [[1.0]])
    control = StepControl(0.01, 100.0)
    bold = FiniteVolume(F, grid, m0, 50.0, control=control)  # far too large a first step
    bold.step()
    assert bold.controller.rejected > 0
    taken = bold.controller.last
    direct = FiniteVolume(F, grid, m0, taken, control=control)  # the accepted step, tried first
    direct.step()
    assert direct.controller.rejected == 0 and direct.controller.last == taken
    np.testing.assert_array_equal(bold.density, direct.density)
    assert bold.time == direct.time == taken
    assert bold.controller.next == direct.controller.next


def test_an_extrapolation_below_zero_is_clipped_within_the_error_estimate():
    m = np.array([1.0, 1e-30, 1.0])

    def step(x: np.ndarray, h: float) -> np.ndarray:
        # Mass moves from cell 0 to cell 2 (exactly linear in h: no error there), and a whole step puts more into
        # the tail cell 1 than two halves do: 2 m_2 - m_1 < 0 there.
        out = x + np.array([-0.1 * h, 5e-6 if h > 0.3 else 1e-6, 0.1 * h])
        return out * (x.sum() / out.sum())

    control = StepControl(0.05, 10.0)
    kept = attempt(step, m, 0.5, control, 1.0, positive=True)
    signed = attempt(step, m, 0.5, control, 1.0, positive=False)
    assert float(signed.density.min()) < 0 <= float(kept.density.min())
    assert kept.density.sum() == pytest.approx(m.sum(), rel=1e-15)
    full, two = step(m, 0.5), step(step(m, 0.25), 0.25)
    assert np.abs(kept.density - signed.density).sum() <= 2 * np.abs(two - full).sum()


def test_a_step_that_cannot_be_taken_names_the_tolerance():
    def exploding(x: np.ndarray, h: float) -> np.ndarray:
        return x * np.nan

    with pytest.raises(FloatingPointError, match="time.tol"):
        advance(exploding, np.ones(3), Controller(1.0), StepControl(0.01, 10.0), 1.0, True, "t = 0")


def test_the_saved_controller_is_checked():
    with pytest.raises(ValueError, match="damaged or altered"):
        Controller.from_array(np.array([0.0, 1.0, 0.0]))
    assert Controller.from_array(Controller(0.5, 0.25, 3).array()) == Controller(0.5, 0.25, 3)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (['discretization="grid"', 'grid.scheme="bdf2"'], "grid.scheme"),
        (['discretization="spectral"', 'spectral.scheme="sbdf2"'], "spectral.scheme"),
        (['discretization="particles"'], "time.adaptive"),
    ],
)
def test_adaptive_steps_are_refused_where_they_do_not_apply_by_key(overrides, key):
    config = load_config(None, [*overrides, "time.adaptive=true", "data.n=20", "grid.gap=false"])
    with pytest.raises(ValueError, match=key):
        check_inputs(config, build_problem(config))


def test_the_tolerance_is_bounded_by_the_configuration():
    from mfld.config import ConfigError

    with pytest.raises(ConfigError, match="time.tol"):
        load_config(None, ["time.tol=0.2"])
