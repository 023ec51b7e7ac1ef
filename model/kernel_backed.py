"""The base of objectives that run in one process and borrow the two-timescale functional's kernel (the classical
and the prior-only objectives)."""

from __future__ import annotations

from collections.abc import Mapping

from .backend import Array
from .distributed import Communicator, single_process
from .functional import DEFAULT_MEMORY_BUDGET
from .problem import Problem
from .two_timescale import TwoTimescaleFunctional


class KernelBacked:
    """Base of the objectives that run in one process and borrow the two-timescale functional's kernel.

    It gives them the communicator (one process), the problem, ``_kernel`` for features and the
    intrinsic kernel, and a solver with no state to restart (their fits are direct).
    """

    name = "kernel-backed"

    def __init__(
        self, problem: Problem, memory_budget: int = DEFAULT_MEMORY_BUDGET, comm: Communicator | None = None
    ) -> None:
        self.comm: Communicator = single_process(self.name, comm)
        self.problem = problem
        self._kernel = TwoTimescaleFunctional(problem, memory_budget)

    def solver_state(self) -> dict[str, Array]:
        """Direct fits carry no state."""
        return {}

    def restore_solver(self, state: Mapping[str, Array]) -> None:
        """Direct fits carry no state: a non-empty one is of another functional."""
        if state:
            raise ValueError(
                f"the {self.name} functional's fits are direct; a solver state "
                f"({', '.join(state)}) is of another functional"
            )
