"""docs/theory.md §7 (THEORY.md §7): the classical objective's stationary measure P* on theta = (a, w) has the
two-timescale optimum mu* as its w-marginal and ``a | w ~ N(a_mu*(w), I_T / lam_a)``, whatever the second
layer's speed. Checked on grids, both stationary measures solved directly (the proximal Gibbs fixed point)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mfld.discretizations.mesh import Grid
from mfld.discretizations.stationary import solve_stationary
from mfld.model.classical import ClassicalFunctional
from mfld.model.two_timescale import TwoTimescaleFunctional
from mfld.validation.problems import low_dim_problem


@pytest.mark.parametrize("cells", [32, 64])
def test_the_classical_optimum_is_the_two_timescale_one_with_a_gaussian_second_layer(cells):
    """On the grids the identity is exact, not O(h^2): the a-quadrature of a Gaussian on cells finer than its
    standard deviation is exact to round-off, and the two solves share the w cells. What is left is the solvers'
    own distance to their fixed points, which Pinsker's inequality bounds by their certificates:
    ``|m - m*|_1 <= sqrt(2 KL) <= sqrt(2 certificate / lam)``. Measured: 6e-8 at 48, 96 and 192 cells alike."""
    pb = low_dim_problem(1, lam=0.05)  # tanh without bias, d = 1, T = 1: theta = (a, w) is a 2-D grid
    w_grid = Grid.box(6.0, cells, 1)
    star = solve_stationary(TwoTimescaleFunctional(pb), w_grid, tol=1e-15)
    # a ~ N(a_mu(w), 1 / lam_a): a box of +-10 leaves a tail below 1e-20 of the mass for |a_mu| < 1.
    grid = Grid((-10.0, -6.0), (10.0, 6.0), (2 * cells, cells))
    P = solve_stationary(ClassicalFunctional(pb), grid, tol=1e-15)
    assert star.converged and P.converged
    bound = math.sqrt(2 * star.certificate / pb.lam) + math.sqrt(2 * P.certificate / pb.lam)

    density = P.density.reshape(grid.shape)
    h_a, a = grid.spacing[0], grid.axes()[0]
    marginal = density.sum(axis=0) * h_a
    mu = star.density.ravel()
    assert np.abs(marginal - mu).sum() * w_grid.spacing[0] <= bound

    conditional = density / marginal[None, :] * h_a  # a | w, one column per w cell
    mean = a @ conditional
    var = ((a[:, None] - mean[None, :]) ** 2 * conditional).sum(axis=0)
    F = TwoTimescaleFunctional(pb)
    points = w_grid.centers()
    a_star = F.second_layer(F.fit(points, mu * w_grid.cell_volume, F.features(points))).ravel()
    weights = mu * w_grid.cell_volume
    # E_mu |mean - a_mu*| <= (largest |a| in the box) x the L1 distance of the two solutions
    assert weights @ np.abs(mean - a_star) <= 10.0 * bound
    np.testing.assert_allclose(var, 1.0 / pb.lam_a, rtol=1e-12)
