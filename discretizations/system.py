"""What a discretisation of MFLD is, seen from the time loop and the run machinery.

A :class:`System` holds one measure (particles, or a density on a grid), the
functional it evolves under, and a step count and time; ``step()`` advances it
by one step of its scheme. Everything a run needs to continue bit for bit is
its ``state()``, a :class:`~mfld.discretizations.state.State`; ``diagnostics()`` are the discretisation's
own observables (a grid's certificate, mass, minimum density) next to the
measure's (:mod:`mfld.model.observables`).
"""

from __future__ import annotations

from typing import Protocol

from mfld.model.backend import Array
from mfld.model.functional import Fit, Functional

from .state import State


class System(Protocol):
    """One discretised measure evolving under a functional (see the module doc)."""

    kind: str
    functional: Functional
    step_count: int
    time: float

    def step(self) -> None: ...

    def fit(self) -> Fit:
        """The functional's fit of the current measure (cached until the next step)."""
        ...

    def measure(self) -> tuple[Array, Array]:
        """``(points, weights)`` of the current measure."""
        ...

    def entropy(self) -> float: ...

    def state(self) -> State: ...

    def diagnostics(self) -> dict[str, float]: ...
