"""A run's state as one typed value: everything a discretisation needs to continue bit for bit.

A state is frozen and lives on the host. Besides the measure, its step and its time it carries
the time scheme's ``history``: what a multi-level scheme keeps of earlier steps (a tuple of
arrays shaped like the measure, newest first; empty for one-step schemes; NaN where a level does
not exist yet, before the scheme's first steps). A particle state also carries its noise
source's state (``rng_state``, JSON text).

Storage writes any state through :meth:`arrays` (its named arrays, text for the noise state)
and rebuilds it with :meth:`from_arrays`; ``group`` names where its arrays live in a file
(``"particles"`` or ``"fields"``). The names are those files of mfld 0.2 use (``position``,
``rng_state``, ``mu``, ``mu_previous``), so that their files read back as states unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from mfld.model.backend import Array, namespace

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


class State(Protocol):
    """What every state is: a step, a time, the group its arrays live in, and those arrays by name."""

    group: ClassVar[str]

    @property
    def step(self) -> int: ...

    @property
    def time(self) -> float: ...

    def arrays(self) -> dict[str, Stored]: ...


@dataclass(frozen=True)
class ParticleState:
    """Particle positions (N x p), their step and time, the noise source's state and the scheme's history."""

    positions: np.ndarray
    step: int
    time: float
    rng_state: str
    history: tuple[np.ndarray, ...] = ()

    group: ClassVar[str] = "particles"

    def arrays(self) -> dict[str, Stored]:
        """``position``, ``rng_state`` and the history levels ``history``, ``history_2``, ..."""
        levels = dict(zip(_levels("history", len(self.history)), self.history, strict=True))
        return {"position": self.positions, "rng_state": self.rng_state, **levels}

    @classmethod
    def from_arrays(cls, step: int, time: float, arrays: Mapping[str, Stored]) -> ParticleState:
        positions, rng_state = arrays["position"], arrays["rng_state"]
        if isinstance(positions, str) or not isinstance(rng_state, str):
            raise ValueError("a particle state stores positions as an array and its noise state as text")
        return cls(np.asarray(positions), step, time, rng_state, _history(arrays, "history"))


@dataclass(frozen=True)
class DensityState:
    """A density on a grid (cells_1 x ... x cells_p), its step and time, and the scheme's history of densities."""

    density: np.ndarray
    step: int
    time: float
    history: tuple[np.ndarray, ...] = ()

    group: ClassVar[str] = "fields"

    def arrays(self) -> dict[str, Stored]:
        """``mu`` and the earlier densities ``mu_previous``, ``mu_previous_2``, ..."""
        return {"mu": self.density, **dict(zip(_levels("mu_previous", len(self.history)), self.history, strict=True))}

    @classmethod
    def from_arrays(cls, step: int, time: float, arrays: Mapping[str, Stored]) -> DensityState:
        density = arrays["mu"]
        if isinstance(density, str):
            raise ValueError("a density state stores its density as an array")
        return cls(np.asarray(density), step, time, _history(arrays, "mu_previous"))


def check_levels(key: str, name: str, levels: int, history: Sequence[object]) -> None:
    """Refuse a saved history whose length is not the ``levels`` the scheme ``name`` (of ``key``) keeps."""
    if history and len(history) != levels:
        raise ValueError(f"{key} = {name!r} continues from {levels} earlier level(s), but the saved state has "
                         f"{len(history)}: the file was written by another scheme or altered")
