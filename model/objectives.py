"""The registry of objectives: ``model.objective`` -> functional class."""

from __future__ import annotations

from collections.abc import Callable

from .classical import ClassicalFunctional
from .distributed import Communicator
from .functional import DEFAULT_MEMORY_BUDGET, Functional
from .label_noise import ExpectedLabelNoiseFunctional
from .prior import PriorOnlyFunctional
from .problem import Problem
from .registry import Registry
from .two_timescale import DualSolve, TwoTimescaleFunctional

Objective = Callable[[Problem, int, Communicator | None], Functional]

OBJECTIVES: Registry[Objective] = Registry("model.objective")
OBJECTIVES.add("two-timescale", TwoTimescaleFunctional,
               "the limiting functional, second layer in closed form, docs/theory.md §2")
OBJECTIVES.add("classical", ClassicalFunctional, "the measure on (a, w), docs/theory.md §6")
OBJECTIVES.add("prior", PriorOnlyFunctional, "U = 0: Ornstein-Uhlenbeck, exact Gaussian solutions")


def make_functional(
    name: str, problem: Problem, memory_budget: int = DEFAULT_MEMORY_BUDGET, comm: Communicator | None = None,
    label_noise: float = 0.0, solve: DualSolve | None = None, expectation: bool = True,
) -> Functional:
    """The functional ``name`` of ``problem``.

    ``label_noise = s > 0`` needs the two-timescale objective; with ``expectation`` the functional
    is its expectation ``G + (s^2/6n) df`` (densities), without it the plain functional whose
    particles run the procedure as a drift. Only the two-timescale functional can be split over
    processes (``comm``) or solve its dual system iteratively (``solve``).
    """
    make = OBJECTIVES[name]
    if make is TwoTimescaleFunctional:  # the one objective with a dual system to solve
        F: Functional = TwoTimescaleFunctional(problem, memory_budget, comm, solve=solve)
    else:
        F = make(problem, memory_budget, comm)
    if label_noise <= 0:
        return F
    if not isinstance(F, TwoTimescaleFunctional):
        raise ValueError("model.label_noise needs model.objective = 'two-timescale'")
    return ExpectedLabelNoiseFunctional(F, label_noise) if expectation else F
