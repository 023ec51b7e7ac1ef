"""The registry of discretisations: ``discretization`` -> how a system is built and what it saves.

An entry is an options dataclass, whose fields are configuration keys (``<section>.<field>``
unless the field's metadata names another key, as ``time.eta``), a
``build(options, functional, state, comm, optimum)`` that makes a fresh system (``state`` None)
or one continuing a saved state, a ``check(options, functional)`` of the cheap refusals made
before any work, the registry of the time schemes its ``scheme`` option chooses from, the
type of the state its systems save, and ``memory(options, n, n_test, p, budget)``, the bytes of
its largest arrays by the configuration key that sizes them (refused before any work when they
do not fit). A discretisation registers itself in its own module
(``DISCRETIZATIONS.add("grid", Discretization(...), doc)``), or a plug-in offers one under the
entry-point group ``mfld.discretizations``; either is run, written, read back and resumed by the
run machinery with no change to it (tests/system/test_roundtrip.py registers one at test time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mfld.model.options import keys_of
from mfld.model.registry import Registry

from .state import DensityState, ParticleState
from .system import System


@dataclass(frozen=True)
class Discretization:
    """One way of representing the measure (see the module doc)."""

    options: type
    build: Callable[..., System]
    check: Callable[[Any, Any], object]
    schemes: Registry[Any]
    state_type: type[ParticleState] | type[DensityState]
    memory: Callable[[Any, int, int, int, int], dict[str, int]]

    @property
    def density(self) -> bool:
        """Whether its systems hold a density on a grid (their files store ``/fields``)."""
        return self.state_type is DensityState

    def keys(self) -> dict[str, str]:
        """The configuration key of each field of its options."""
        return keys_of(self.options)

    @property
    def Options(self) -> type:  # noqa: N802 - the name every registry entry's options go by
        """The options dataclass (what :class:`~mfld.model.registry.Registry` reads off a plug-in's entry)."""
        return self.options


DISCRETIZATIONS: Registry[Discretization] = Registry(
    "discretization", group="mfld.discretizations", builtins="mfld.discretizations"
)
