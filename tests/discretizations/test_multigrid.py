"""Conjugate gradients with the multigrid V-cycle (grid.linear_solver = "cg"): the direct solve, the L1 error bound,
and the structure every level keeps (mass, positivity of rates, detailed balance, self-adjointness)."""

import numpy as np
import pytest

from mfld.discretizations import multigrid
from mfld.discretizations.implicit_solvers import LINEAR_SOLVERS, WEIGHT_RANGE, ConjugateGradient
from mfld.discretizations.mesh import Grid
from mfld.discretizations.multigrid import COARSE_SCALE, VCycle, coarsen
from mfld.discretizations.scharfetter_gummel import apply_rates, rates

SHAPES = [(700,), (30, 24), (11, 9, 12)]  # odd axes too; each has a coarse level below the finest


def _case(shape: tuple[int, ...], seed: int, offset: float = 0.0, spread: float = 1.0) -> tuple[Grid, np.ndarray]:
    grid = Grid.box(3.0, list(shape), len(shape))
    rng = np.random.default_rng(seed)
    x = grid.centers()
    V = offset + spread * (0.5 * (x**2).sum(axis=1) + 0.3 * np.sin(x @ rng.normal(size=grid.dim)))
    return grid, V.reshape(grid.shape)


def _density(grid: Grid, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(grid.shape) * np.exp(-3 * rng.random(grid.shape))


@pytest.mark.parametrize("shape", SHAPES, ids=["p=1", "p=2", "p=3"])
@pytest.mark.parametrize(
    "lam, offset", [(0.05, 0.0), (0.005, 4.0)], ids=["lam=0.05", "lam=0.005 (exp(V/lam) overflows)"]
)
@pytest.mark.parametrize("dt", [0.01, 0.5, 20.0])
def test_cg_is_the_direct_solve(shape, lam, offset, dt):
    grid, V = _case(shape, 0, offset, spread=1.0 if lam > 0.01 else 0.5)
    assert len(VCycle(grid, V, lam, dt).levels) >= 2
    if offset:  # the unscaled weights exp(V / lam) of the symmetric form would overflow; their range does not
        assert V.max() / lam > 709 and (V.max() - V.min()) / lam < WEIGHT_RANGE
    m = _density(grid, 1)
    direct = LINEAR_SOLVERS["direct"](grid, lam, 0.0).solve(V, dt, m)
    solver = ConjugateGradient(grid, lam, 1e-11)
    cg = solver.solve(V, dt, m)
    assert solver.fallbacks == 0
    assert np.abs(cg - direct).sum() <= 1e-10 * np.abs(direct).sum()
    assert cg.min() >= 0 and abs(cg.sum() / m.sum() - 1) < 1e-13


@pytest.mark.parametrize("tol", [1e-3, 1e-6])
@pytest.mark.parametrize("shape", SHAPES[1:], ids=["p=2", "p=3"])
def test_the_step_error_is_within_the_tolerance_in_l1(shape, tol):
    """I - dt A is an M-matrix with unit column sums, so ||m - m*||_1 <= ||residual||_1 <= tol ||r||_1; the
    positivity clip and the mass rescaling after it move at most that much again."""
    grid, V = _case(shape, 2)
    m = _density(grid, 3)
    direct = LINEAR_SOLVERS["direct"](grid, 0.05, 0.0).solve(V, 2.0, m)
    solver = ConjugateGradient(grid, 0.05, tol)
    cg = solver.solve(V, 2.0, m)
    assert np.abs(cg - direct).sum() <= 2 * tol * m.sum()
    assert solver.iterations >= 1  # the first V-cycle alone was not that close


def test_a_potential_beyond_the_weights_range_is_solved_by_krylov():
    grid, V = _case(SHAPES[1], 4, spread=3.0)
    lam = 0.01
    assert (V.max() - V.min()) / lam > WEIGHT_RANGE
    m = _density(grid, 5)
    solver = ConjugateGradient(grid, lam, 1e-11)
    out = solver.solve(V, 0.5, m)
    direct = LINEAR_SOLVERS["direct"](grid, lam, 0.0).solve(V, 0.5, m)
    assert solver.fallbacks == 1
    assert np.abs(out - direct).sum() <= 1e-10 * np.abs(direct).sum()


@pytest.mark.parametrize("shape", SHAPES, ids=["p=1", "p=2", "p=3"])
def test_the_coarse_operator_is_r_a_p_and_keeps_mass_and_detailed_balance(shape):
    grid, V = _case(shape, 6)
    lam = 0.07
    fine = [rates(grid, V, lam, k) for k in range(grid.dim)]
    coarse, coarse_V, phi = coarsen(fine, V, lam)
    coarse_shape = coarse_V.shape
    x = np.random.default_rng(7).random(coarse_shape)
    # P x: each block's mass spread in proportion to exp(-V / lam); R: the sum over a block
    spread = phi * multigrid._spread(x, grid.shape)
    np.testing.assert_allclose(multigrid._blocks(spread, np.sum, 0.0), x, rtol=1e-13)
    rap = multigrid._blocks(apply_rates(fine, spread), np.sum, 0.0)
    np.testing.assert_allclose(COARSE_SCALE * rap, apply_rates(coarse, x), rtol=1e-10, atol=1e-12 * np.abs(rap).max())
    assert abs(apply_rates(coarse, x).sum()) < 1e-12 * np.abs(x).sum() * max(a.max() for a, _ in coarse)
    gibbs = np.exp(-(coarse_V - coarse_V.min()) / lam)
    for k, (a, b) in enumerate(coarse):
        assert a.min() >= 0 and b.min() >= 0
        lo = np.take(gibbs, np.arange(coarse_shape[k] - 1), axis=k)
        hi = np.take(gibbs, np.arange(1, coarse_shape[k]), axis=k)
        np.testing.assert_allclose(a * lo, b * hi, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("shape", SHAPES[1:], ids=["p=2", "p=3"])
def test_the_v_cycle_is_self_adjoint_and_positive_in_the_weighted_product(shape):
    grid, V = _case(shape, 8)
    lam = 0.05
    cycle = VCycle(grid, V, lam, 3.0)
    weight = np.exp((V - V.mean()) / lam)
    rng = np.random.default_rng(9)
    for _ in range(3):
        x, y = rng.standard_normal(grid.shape), rng.standard_normal(grid.shape)
        xPy, yPx = np.sum(weight * x * cycle(y)), np.sum(weight * y * cycle(x))
        scale = np.sqrt(np.sum(weight * x * cycle(x)) * np.sum(weight * y * cycle(y)))
        assert abs(xPy - yPx) < 1e-12 * scale
        assert np.sum(weight * x * cycle(x)) > 0


def test_negative_values_beyond_the_error_bound_are_kept_for_the_scheme_to_see():
    """A right side with a negative part (BDF2's (4 m^k - m^{k-1}) / 3 can have one) has a solution with negative
    values that no solver error explains: cg keeps them, so that BDF2's positivity check sees them."""
    grid, V = _case(SHAPES[1], 10)
    m = _density(grid, 11)
    m[:3] -= 0.5  # a negative band along one edge
    direct = LINEAR_SOLVERS["direct"](grid, 0.05, 0.0).solve(V, 0.3, m)
    cg = ConjugateGradient(grid, 0.05, 1e-11).solve(V, 0.3, m)
    assert direct.min() < -0.1 and cg.min() < -0.1
    assert np.abs(cg - direct).sum() <= 1e-10 * np.abs(direct).sum()
