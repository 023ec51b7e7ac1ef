"""Finite volumes, spectral and stationary solvers against exact solutions and each other."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mfld.discretizations.grid import FiniteVolume
from mfld.discretizations.mesh import BoxWarning, Grid, check_box, gaussian_density
from mfld.discretizations.scharfetter_gummel import fokker_planck_matrix
from mfld.discretizations.spectral import FourierSpectral
from mfld.discretizations.stationary import solve_stationary
from mfld.model.datasets import make_dataset
from mfld.model.prior import PriorOnlyFunctional
from mfld.model.problem import Problem
from mfld.model.two_timescale import TwoTimescaleFunctional

# Ornstein-Uhlenbeck: kappa = lam lam_w = 1, stationary covariance I / lam_w = 0.1 I.
LAM, LAM_W, T_END = 0.1, 10.0, 0.5
MEAN0 = np.array([0.5, -0.3])
COV0 = np.array([[0.05, 0.02], [0.02, 0.08]])


def ou(p: int) -> PriorOnlyFunctional:
    return PriorOnlyFunctional(Problem(np.zeros((2, p)), np.zeros(2), "tanh", LAM, 1.0, LAM_W))


def ou_exact(grid: Grid, t: float) -> np.ndarray:
    """N(mean0 e^{-kt}, e^{-2kt} cov0 + (1 - e^{-2kt}) I / lam_w) at the cell centres."""
    k = LAM * LAM_W
    p = grid.dim
    mean = MEAN0[:p] * math.exp(-k * t)
    cov = COV0[:p, :p] * math.exp(-2 * k * t) + np.eye(p) * (1 - math.exp(-2 * k * t)) / LAM_W
    X = grid.centers() - mean
    quad = np.einsum("ij,jk,ik->i", X, np.linalg.inv(cov), X)
    return (np.exp(-0.5 * quad) / math.sqrt((2 * math.pi) ** p * np.linalg.det(cov))).reshape(grid.shape)


def ou_run(p: int, cells: int, eta: float, scheme: str = "implicit-euler", cls=FiniteVolume) -> FiniteVolume:
    grid = Grid.box(2.5, cells, p)
    m0 = gaussian_density(grid, MEAN0[:p], COV0[:p, :p])
    system = cls(ou(p), grid, m0, eta, scheme)
    for _ in range(int(round(T_END / eta))):
        system.step()
    return system


def orders(errors: list[float], ratio: float = 2.0) -> list[float]:
    return [math.log(a / b) / math.log(ratio) for a, b in zip(errors, errors[1:], strict=False)]


@pytest.mark.parametrize("p, cells", [(1, [50, 100, 200]), (2, [16, 32, 64])])
def test_space_order_is_two_on_ornstein_uhlenbeck(p, cells):
    eta = 2e-3 if p == 1 else 5e-3  # bdf2, so that the time error is far below the space error
    errors = []
    for n in cells:
        s = ou_run(p, n, eta, "bdf2")
        errors.append(float(np.max(np.abs(s.density - ou_exact(s.grid, T_END)))))
    observed = orders(errors)
    assert all(1.8 < o < 2.2 for o in observed), (errors, observed)


@pytest.mark.parametrize("scheme, order", [("implicit-euler", 1.0), ("bdf2", 2.0)])
def test_time_order_on_ornstein_uhlenbeck(scheme, order):
    # The reference removes the space error: same grid, a 64 times smaller step.
    ref = ou_run(1, 100, T_END / 1280, "bdf2").density
    errors = [float(np.max(np.abs(ou_run(1, 100, T_END / s, scheme).density - ref))) for s in (10, 20, 40)]
    observed = orders(errors)
    assert all(abs(o - order) < 0.15 for o in observed), (errors, observed)


def test_frozen_potential_equilibrium_is_the_gibbs_density(rng):
    grid = Grid((-1.0, -2.0), (1.5, 2.0), (13, 17))
    V = rng.standard_normal(grid.size) * 0.3 + grid.centers()[:, 0] ** 2
    A = fokker_planck_matrix(grid, V, 0.07)
    gibbs = np.exp(-V / 0.07)
    assert np.max(np.abs(A @ gibbs)) < 1e-12 * np.max(np.abs(A).sum(axis=0)) * gibbs.max()
    # Zero column sums (mass) and non-negative off-diagonal entries (positivity).
    np.testing.assert_allclose(np.asarray(A.sum(axis=0)).ravel(), 0.0, atol=1e-12 * abs(A).max())
    off = A - np.diag(A.diagonal())
    assert off.min() >= 0


def nonlinear(p: int, lam: float = 0.05) -> TwoTimescaleFunctional:
    ds = make_dataset("single-index", d=1, n=40, n_test=10, seed=3)
    return TwoTimescaleFunctional(Problem.from_dataset(ds, "tanh" if p == 1 else "tanh_bias", lam, 1.0, 1.0))


@pytest.mark.parametrize("p, cells", [(1, 160), (2, 48)])
@pytest.mark.parametrize("eta", [0.3, 30.0])
def test_mass_positivity_and_descent_on_the_nonlinear_problem(p, cells, eta):
    F = nonlinear(p)
    grid = Grid.box(6.0, cells, p)
    fv = FiniteVolume(F, grid, gaussian_density(grid, np.zeros(p), np.eye(p)), eta)
    objective = [fv.objective()]
    for _ in range(25):
        fv.step()
        assert abs(fv.density.sum() * grid.cell_volume - 1.0) < 1e-12
        assert fv.density.min() >= 0.0
        objective.append(fv.objective())
    assert np.all(np.diff(objective) <= 1e-14), np.diff(objective).max()


@pytest.mark.parametrize("p, cells", [(1, 160), (2, 48)])
def test_long_time_grid_solution_is_the_stationary_solution(p, cells):
    F = nonlinear(p)
    grid = Grid.box(6.0, cells, p)
    star = solve_stationary(F, grid, tol=1e-14)
    assert star.converged and star.certificate < 1e-14
    fv = FiniteVolume(F, grid, gaussian_density(grid, np.zeros(p), np.eye(p)), 0.5, reference_objective=star.objective)
    t, gap, cert = [], [], []
    for k in range(300):
        fv.step()
        if k % 10 == 9:
            d = fv.diagnostics()
            t.append(fv.time)
            gap.append(d["gap"])
            cert.append(d["certificate"])
            # The certificate bounds the gap (Nitanda-Wu-Suzuki), up to round-off.
            assert d["gap"] <= d["certificate"] + 1e-13
    assert cert[-1] < 1e-10
    assert np.abs(fv.density - star.density).sum() * grid.cell_volume < 1e-6
    # Exponential decay: a straight line in log(gap) over the range above round-off.
    t, gap = np.array(t), np.array(gap)
    keep = gap > 1e-11
    assert keep.sum() >= 5
    slope, intercept = np.polyfit(t[keep], np.log(gap[keep]), 1)
    resid = np.log(gap[keep]) - (slope * t[keep] + intercept)
    assert slope < 0 and np.max(np.abs(resid)) < 0.5, (slope, resid)


def test_solve_stationary_defaults_are_the_configuration_defaults_and_a_stop_short_of_tol_warns():
    import inspect

    from mfld.config import load_config
    from mfld.discretizations.stationary import NotConvergedWarning

    signature = inspect.signature(solve_stationary).parameters
    assert {k: signature[k].default for k in ("tol", "max_iter", "damping", "memory")} == load_config()["stationary"]
    with pytest.warns(NotConvergedWarning, match="max_iter = 2"):
        result = solve_stationary(nonlinear(1), Grid.box(6.0, 64, 1), max_iter=2)
    assert not result.converged and result.certificate > 1e-12


def test_bdf2_reports_negative_density_where_implicit_euler_stays_positive():
    """A narrow bump moved by a large step: BDF2's (4 m^k - m^{k-1}) / 3 goes negative."""
    grid = Grid.box(2.5, 200, 1)
    m0 = gaussian_density(grid, [1.5], [[0.001]])
    be = FiniteVolume(ou(1), grid, m0, 0.5, "implicit-euler")
    for _ in range(10):
        be.step()
        assert be.density.min() >= 0
    bdf2 = FiniteVolume(ou(1), grid, m0, 0.5, "bdf2")
    with pytest.raises(FloatingPointError, match="bdf2 produced a negative density.*implicit-euler"):
        for _ in range(10):
            bdf2.step()


def test_box_must_hold_the_prior():
    with pytest.raises(ValueError, match=r"cannot hold the prior.*grid.half_width >= "):
        check_box(Grid.box(2.0, 64, 1), [1.0])
    with pytest.raises(ValueError, match=r"too coarse for the prior.*grid.cells >= 24"):
        check_box(Grid.box(6.0, 8, 1), [1.0])
    check_box(Grid.box(6.0, 64, 2), [1.0, 1.0])


def test_mass_reaching_the_edge_warns():
    F = PriorOnlyFunctional(Problem(np.zeros((2, 1)), np.zeros(2), "tanh", 1.0, 1.0, 0.01))  # wide stationary law
    grid = Grid.box(3.0, 30, 1)
    fv = FiniteVolume(F, grid, gaussian_density(grid, [0.0], [[0.2]]), 0.5)
    with pytest.warns(BoxWarning, match="enlarge grid.half_width"):
        for _ in range(20):
            fv.step()


def test_spectral_conserves_mass_and_beats_finite_volumes_per_unknown():
    spec = ou_run(1, 48, 1e-4, "imex-euler", cls=FourierSpectral)
    err_spec = float(np.max(np.abs(spec.density - ou_exact(spec.grid, T_END))))
    fv = ou_run(1, 400, 1e-3, "bdf2")
    err_fv = float(np.max(np.abs(fv.density - ou_exact(fv.grid, T_END))))
    assert abs(spec.density.sum() * spec.grid.cell_volume - 1.0) < 1e-12
    assert err_spec < err_fv, (err_spec, err_fv)  # 48 spectral unknowns against 400 finite volumes


@pytest.mark.parametrize("scheme, order", [("imex-euler", 1.0), ("sbdf2", 2.0)])
def test_spectral_time_order(scheme, order):
    """Ornstein-Uhlenbeck in 2-D on 40^2 modes (spatial error below 1e-7): halving eta divides the error
    at T by 2^order."""
    errors = []
    for eta in (0.02, 0.01, 0.005):
        run = ou_run(2, 40, eta, scheme, cls=FourierSpectral)
        errors.append(float(np.max(np.abs(run.density - ou_exact(run.grid, T_END)))))
        assert abs(run.density.sum() * run.grid.cell_volume - 1.0) < 1e-12
    observed = orders(errors)
    assert all(abs(o - order) < 0.15 for o in observed), (errors, observed)


def test_spectral_converges_spectrally_to_the_stationary_objective():
    """Objective error of the long-time spectral solution at 48 and 96 modes.

    Doubling the modes of an analytic density shrinks the error geometrically;
    a second-order method would gain only a factor 4.
    """
    F = nonlinear(1)
    star = solve_stationary(F, Grid.box(6.0, 1600, 1), tol=1e-14)
    errors = []
    for n in (48, 96):
        grid = Grid.box(6.0, n, 1)
        sp = FourierSpectral(F, grid, gaussian_density(grid, [0.0], [[1.0]]), 0.05)
        for _ in range(3000):
            sp.step()
        assert abs(sp.density.sum() * grid.cell_volume - 1.0) < 1e-12
        errors.append(abs(sp.objective() - star.objective))
    assert errors[1] < 1e-9 and errors[0] / errors[1] > 100, errors
