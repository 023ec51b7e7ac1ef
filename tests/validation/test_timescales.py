"""The measurements of ``mfld experiment timescales``: W1 on shared cells and the averaging order."""

from __future__ import annotations

import numpy as np
import pytest

from mfld.validation.distances import Cells, exact_1d
from mfld.validation.experiments.timescales import output_times, w1_same_cells
from mfld.validation.experiments.timescales_report import local_orders, order


@pytest.mark.parametrize("seed", range(4))
def test_w1_on_shared_cells_is_the_exact_1d_distance_of_the_cell_measures(seed):
    """An independent route: :func:`exact_1d` integrates the quantile functions of the two cell measures."""
    rng = np.random.default_rng(seed)
    a, b = rng.random(17) ** 3, rng.random(17) ** 3
    a, b = a / a.sum(), b / b.sum()
    h = 0.37
    edges = (np.arange(18) * h - 3.0,)
    expected = exact_1d(Cells(a, edges), Cells(b, edges))[0]
    assert w1_same_cells(a - b, h) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_w1_on_shared_cells_of_a_shift_by_one_cell_is_the_cell_width():
    m = np.zeros(10)
    m[3] = 1.0
    assert w1_same_cells(m - np.roll(m, 1), 0.25) == pytest.approx(0.25, rel=1e-14)


def test_output_times_resolve_the_initial_layer():
    t = output_times(4.0, 40)
    assert t[0] == 0.0 and t[-1] == 4.0 and np.all(np.diff(t) > 0)
    assert t[1] == pytest.approx(4e-4) and len(t) == 41 + 9  # 0.4 = T / 10 is in both sets


def test_the_order_of_a_weak_averaging_expansion_tends_to_one():
    """gap = c1 / r + c2 / r^2: the local orders approach 1, each deviation tending to 4 times the next; the estimate's
    uncertainty covers the distance to 1 that is left, while a genuine r^-1/2 law is told apart."""
    rates = [1.0, 4.0, 16.0, 64.0, 256.0]
    gaps = [0.02 / r + 0.05 / r**2 for r in rates]
    deviations = [abs(1 - q) for q in local_orders(rates, gaps)]
    assert deviations[1] > 3 * deviations[2] > 9 * deviations[3] > 0
    q, u = order(rates, gaps, gaps)
    assert abs(q - 1) <= 2 * u
    q, u = order(rates, [r**-0.5 for r in rates], [r**-0.5 for r in rates])
    assert q == pytest.approx(0.5) and u == pytest.approx(0.0, abs=1e-12)
