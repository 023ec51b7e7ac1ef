"""The linear solvers of the implicit finite-volume step: each against the direct LU and the mathematics."""

import math

import numpy as np
import pytest

from mfld.discretizations import loop
from mfld.discretizations.grid import FiniteVolume
from mfld.discretizations.implicit_solvers import LINEAR_SOLVERS, choose, split_solve
from mfld.discretizations.mesh import Grid, gaussian_density
from mfld.discretizations.scharfetter_gummel import apply_rates, fokker_planck_matrix, rates
from mfld.discretizations.stationary import solve_stationary
from mfld.validation.problems import low_dim_functional
from mfld.validation.report import fit_slope


def _random_potential(grid: Grid, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = grid.centers()
    return (0.5 * (x**2).sum(axis=1) + 0.3 * np.sin(x @ rng.normal(size=grid.dim))).reshape(grid.shape)


@pytest.mark.parametrize("cells", [(17,), (9, 11), (5, 6, 7)])
def test_the_matrix_free_operator_is_the_sparse_matrix(cells):
    grid = Grid.box(3.0, list(cells), len(cells))
    V = _random_potential(grid, 0)
    m = np.random.default_rng(1).random(grid.shape)
    A = fokker_planck_matrix(grid, V, 0.07)
    Am = apply_rates([rates(grid, V, 0.07, k) for k in range(grid.dim)], m)
    np.testing.assert_allclose(Am.ravel(), A @ m.ravel(), rtol=1e-13, atol=1e-13 * np.abs(A).max())


@pytest.mark.parametrize("cells", [(40,), (12, 9), (6, 5, 7)])
def test_a_splitting_sweep_is_positive_conservative_and_keeps_the_gibbs_density(cells):
    grid = Grid.box(3.0, list(cells), len(cells))
    V, lam = _random_potential(grid, 2), 0.05
    m = np.random.default_rng(3).random(grid.shape) * np.exp(-10 * np.random.default_rng(4).random(grid.shape))
    out = split_solve(grid, V, lam, 0.7, m)
    assert out.min() >= 0
    assert abs(out.sum() / m.sum() - 1) < 1e-13
    gibbs = np.exp(-(V - V.min()) / lam)  # A_k exp(-V / lam) = 0 on every axis: each factor fixes it
    np.testing.assert_allclose(split_solve(grid, V, lam, 0.7, gibbs), gibbs, rtol=1e-10, atol=1e-13)


def test_in_one_dimension_the_splitting_is_the_exact_solve():
    grid = Grid.box(3.0, 200, 1)
    V = _random_potential(grid, 5)
    m = np.random.default_rng(6).random(grid.shape)
    exact = LINEAR_SOLVERS["direct"](grid, 0.05, 0.0).solve(V, 0.3, m)
    np.testing.assert_allclose(split_solve(grid, V, 0.05, 0.3, m), exact, rtol=1e-12)


def _run(solver: str, scheme: str, steps: int, eta: float, cells: int = 48, tol: float = 1e-10) -> FiniteVolume:
    F = low_dim_functional(2)
    grid = Grid.box(6.0, cells, 2)
    fv = FiniteVolume(
        F, grid, gaussian_density(grid, [0, 0], np.eye(2)), eta, scheme, linear_solver=solver, solver_tol=tol
    )
    loop.run(fv, steps)
    return fv


@pytest.mark.parametrize("solver", ["krylov", "cg"])
@pytest.mark.parametrize("scheme", ["implicit-euler", "bdf2"])
def test_krylov_after_50_nonlinear_steps_is_the_direct_density_to_the_tolerance(scheme, solver):
    """Each step's solve has relative residual (cg: relative L1 error) <= 1e-10; 50 steps of a contraction keep the
    densities within 1e-8."""
    direct, krylov = _run("direct", scheme, 50, 0.2), _run(solver, scheme, 50, 0.2)
    ref = direct.density
    assert np.max(np.abs(krylov.density - ref)) / ref.max() < 1e-8
    for fv in (direct, krylov):
        assert fv.density.min() >= 0
        assert abs(fv.density.sum() * fv.grid.cell_volume - 1) < 1e-12


def test_the_splitting_error_is_first_order_in_tau():
    """Splitting against the unsplit step at the same eta, at T = 2: the difference halves with eta."""
    T, errors, taus = 2.0, [], [0.2, 0.1, 0.05]
    for eta in taus:
        steps = round(T / eta)
        split, direct = _run("splitting", "implicit-euler", steps, eta), _run("direct", "implicit-euler", steps, eta)
        errors.append(np.max(np.abs(split.density - direct.density)) / direct.density.max())
        assert split.density.min() >= 0
        assert abs(split.density.sum() * split.grid.cell_volume - 1) < 1e-12
    order = fit_slope(taus, errors)
    assert 0.8 <= order <= 1.2, (errors, order)


@pytest.mark.parametrize("solver", ["splitting", "krylov", "cg"])
def test_the_long_time_density_is_the_stationary_one(solver):
    """Splitting keeps the Gibbs density of a frozen V, so its fixed points are those of the exact scheme:
    the long-time density is mu* of the proximal Gibbs fixed point, for both solvers."""
    F = low_dim_functional(2)
    grid = Grid.box(6.0, 48, 2)
    star = solve_stationary(F, grid, tol=1e-13)
    fv = FiniteVolume(F, grid, gaussian_density(grid, [0, 0], np.eye(2)), 1.0, linear_solver=solver)
    loop.run(fv, 400)
    cert = fv.diagnostics()["certificate"]
    assert cert < 1e-11
    # lam KL(m || mu*) <= Obj(m) - Obj(mu*) <= cert (the entropy sandwich), and Pinsker: TV <= sqrt(2 KL),
    # for the run and for the stationary solver's own density, both against the exact mu*.
    lam = F.problem.lam
    bound = math.sqrt(2 * max(cert, 0.0) / lam) + math.sqrt(2 * max(star.certificate, 0.0) / lam)
    tv = 0.5 * np.abs(fv.density - star.density).sum() * grid.cell_volume
    assert tv <= bound + 1e-12, (tv, bound)


def test_three_dimensions_krylov_is_direct_and_auto_picks_by_size():
    assert choose("auto", (64,)) == "direct" and choose("auto", (40, 40)) == "direct"
    assert choose("auto", (64, 64)) == "cg" and choose("auto", (16, 16, 16)) == "cg"
    with pytest.raises(ValueError, match="grid.linear_solver must be one of"):
        choose("lu", (8, 8))
    grid = Grid.box(3.0, 14, 3)
    V, lam = _random_potential(grid, 7), 0.05
    m = np.random.default_rng(8).random(grid.shape)
    direct = LINEAR_SOLVERS["direct"](grid, lam, 0.0).solve(V, 0.5, m)
    krylov = LINEAR_SOLVERS["krylov"](grid, lam, 1e-12).solve(V, 0.5, m)
    np.testing.assert_allclose(krylov, direct, rtol=1e-9, atol=1e-12 * direct.max())
    assert abs(krylov.sum() / m.sum() - 1) < 1e-13 and krylov.min() >= 0
