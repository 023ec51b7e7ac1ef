"""A run's state as one typed value: everything a discretisation needs to continue bit for bit.

A state is frozen and lives on the host. Besides the measure, its step and its time it carries
the time scheme's ``history``: what a multi-level scheme keeps of earlier steps (a tuple of
arrays shaped like the measure, newest first; empty for one-step schemes; NaN where a level does
not exist yet, before the scheme's first steps). A particle state also carries its noise
source's state (``rng_state``, JSON text) and the functional's iterative-solver state entering its
step (``solver``: the preconditioner's measure and the last solution of pcg, empty for direct
solves; :meth:`mfld.model.functional.Functional.solver_state`), so that a run continued from it
solves as the original did whatever the checkpoint steps.

Storage writes any state through :meth:`arrays` (its named arrays, text for the noise state)
and rebuilds it with :meth:`from_arrays`; ``group`` names where its arrays live in a file
(``"particles"`` or ``"fields"``), and :meth:`dimensions` names each array's axes, against which a
reader checks what a file holds. The names are those files of mfld 0.2 use (``position``,
``rng_state``, ``mu``, ``mu_previous``), so that their files read back as states unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from mfld.model.backend import Array, namespace
from mfld.model.dual_solve import solver_axes

Stored = np.ndarray | str
"""One stored part of a state: an array, or text."""


def existing(level: Array) -> Array | None:
    """A saved history level (an array of any backend), or None where it did not exist yet (stored as NaN)."""
    return None if bool(namespace(level).isnan(level).all()) else level


def _levels(prefix: str, count: int) -> list[str]:
    """``prefix``, ``prefix_2``, ... for ``count`` history levels (the 0.2 name first)."""
    return [prefix if k == 0 else f"{prefix}_{k + 1}" for k in range(count)]


def _history(arrays: Mapping[str, Stored], prefix: str) -> tuple[np.ndarray, ...]:
    out: list[np.ndarray] = []
    for name in _levels(prefix, len(arrays)):
        if name not in arrays:
            break
        value = arrays[name]
        if isinstance(value, str):
            raise ValueError(f"history level {name!r} is text, not an array")
        out.append(np.asarray(value))
    return tuple(out)


SOLVER = "solver_"
"""The prefix of the stored names of a particle state's solver arrays."""


class State(Protocol):
    """What every state is: a step, a time, the group its arrays live in, and those arrays by name."""

    group: ClassVar[str]

    @property
    def step(self) -> int: ...

    @property
    def time(self) -> float: ...

    def arrays(self) -> dict[str, Stored]: ...

    @staticmethod
    def dimensions(name: str) -> tuple[str, ...] | None:
        """The axes of the stored array ``name`` (``()`` for text), None for a name no such state has."""
        ...


@dataclass(frozen=True)
class ParticleState:
    """Particle positions (N x p), their step and time, the noise source's state, the scheme's history and the
    functional's solver state."""

    positions: np.ndarray
    step: int
    time: float
    rng_state: str
    history: tuple[np.ndarray, ...] = ()
    solver: Mapping[str, np.ndarray] = field(default_factory=dict)

    group: ClassVar[str] = "particles"

    def arrays(self) -> dict[str, Stored]:
        """``position``, ``rng_state``, the history levels ``history``, ``history_2``, ... and the solver's arrays
        ``solver_<name>``."""
        levels = dict(zip(_levels("history", len(self.history)), self.history, strict=True))
        solver = {SOLVER + name: value for name, value in self.solver.items()}
        return {"position": self.positions, "rng_state": self.rng_state, **levels, **solver}

    @staticmethod
    def dimensions(name: str) -> tuple[str, ...] | None:
        """``(particle, component)`` for the positions and the history, ``()`` for the noise state; the solver's
        arrays by their names (:func:`~mfld.model.two_timescale.solver_axes`)."""
        if name == "rng_state":
            return ()
        if name == "position" or name in _levels("history", 1) or (name.startswith("history_") and name[8:].isdigit()):
            return ("particle", "component")
        return solver_axes(name[len(SOLVER) :]) if name.startswith(SOLVER) else None

    @classmethod
    def from_arrays(cls, step: int, time: float, arrays: Mapping[str, Stored]) -> ParticleState:
        """The state of a frame's arrays; a solver array that the frame does not have (stored as NaN) is left out."""
        positions, rng_state = arrays["position"], arrays["rng_state"]
        if isinstance(positions, str) or not isinstance(rng_state, str):
            raise ValueError("a particle state stores positions as an array and its noise state as text")
        solver = {}
        for name, value in arrays.items():
            if name.startswith(SOLVER):
                if isinstance(value, str):
                    raise ValueError(f"solver array {name!r} is text, not an array")
                if existing(value) is not None:
                    solver[name[len(SOLVER) :]] = np.asarray(value)
        return cls(np.asarray(positions), step, time, rng_state, _history(arrays, "history"), solver)


@dataclass(frozen=True)
class DensityState:
    """A density on a grid (cells_1 x ... x cells_p), its step and time, the scheme's history of densities and,
    with adaptive steps, the step controller's state (:class:`~mfld.discretizations.adaptive.Controller`)."""

    density: np.ndarray
    step: int
    time: float
    history: tuple[np.ndarray, ...] = ()
    control: np.ndarray | None = None

    group: ClassVar[str] = "fields"

    def arrays(self) -> dict[str, Stored]:
        """``mu``, the earlier densities ``mu_previous``, ``mu_previous_2``, ... and ``step_control`` (adaptive
        steps: the next step, the last one, the rejections so far)."""
        levels = dict(zip(_levels("mu_previous", len(self.history)), self.history, strict=True))
        control = {} if self.control is None else {"step_control": self.control}
        return {"mu": self.density, **levels, **control}

    @staticmethod
    def dimensions(name: str) -> tuple[str, ...] | None:
        """``(cell,)`` for the densities (the grid's p axes, ``w_0`` ... ``w_{p-1}``), ``(column,)`` for the step
        control."""
        if name == "mu" or name == "mu_previous" or (name.startswith("mu_previous_") and name[12:].isdigit()):
            return ("cell",)
        return ("column",) if name == "step_control" else None

    @classmethod
    def from_arrays(cls, step: int, time: float, arrays: Mapping[str, Stored]) -> DensityState:
        density, control = arrays["mu"], arrays.get("step_control")
        if isinstance(density, str) or isinstance(control, str):
            raise ValueError("a density state stores its density and its step control as arrays")
        kept = None if control is None else np.asarray(control)
        return cls(np.asarray(density), step, time, _history(arrays, "mu_previous"), kept)


def check_levels(
    key: str, name: str, levels: int, history: Sequence[Array], step: int | None = None, prefix: str = ""
) -> None:
    """Refuse a saved history whose length is not the ``levels`` the scheme ``name`` (of ``key``) keeps.

    With the state's ``step``, also one that lacks a level the step count says exists (level k, newest first,
    exists from step k + 1 on) or holds it with a NaN or infinite value: NaN marks a level that does not exist
    yet, so a damaged one would otherwise restart the scheme silently. ``prefix`` names the stored arrays
    (``mu_previous``, ``mu_previous_2``, ...) in the message.
    """
    if history and len(history) != levels:
        raise ValueError(
            f"{key} = {name!r} continues from {levels} earlier level(s), but the saved state has "
            f"{len(history)}: the file was written by another scheme or altered"
        )
    if step is None:
        return
    names = _levels(prefix or "history", levels)
    for k in range(min(step, levels)):
        problem = "is missing"
        if history:
            finite = bool(namespace(history[k]).isfinite(history[k]).all())
            problem = "" if finite else "holds NaN or infinite values"
        if problem:
            raise ValueError(
                f"{key} = {name!r} at step {step} continues from the state {k + 1} step(s) earlier, saved as "
                f"{names[k]!r}, which {problem}: the file was damaged or altered; start the run again, or "
                "resume a copy saved before"
            )
