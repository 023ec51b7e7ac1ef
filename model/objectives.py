"""Making the configured functional: ``model.objective`` (:data:`~mfld.model.functional.OBJECTIVES`) with the
label-noise expectation or procedure around it."""

from __future__ import annotations

from .distributed import Communicator
from .functional import DEFAULT_MEMORY_BUDGET, OBJECTIVES, Functional, Objective
from .label_noise import ExpectedLabelNoiseFunctional
from .problem import Problem
from .two_timescale import DualSolve, TwoTimescaleFunctional

__all__ = ["OBJECTIVES", "Objective", "make_functional"]


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
