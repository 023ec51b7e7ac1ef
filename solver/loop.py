"""The time loop: advance a system and hand it to observers.

A *system* is any discretisation with ``step()``, ``step_count`` and ``time``;
the loop knows nothing else of it. *Observers* (metrics, progress, checkpoints)
see the system after every step and decide themselves whether they are due.
Ctrl-C does not interrupt a step half-way: it is caught, the current step is
completed, observers finish (the checkpoint writer writes a final frame) and
:class:`Interrupted` is raised.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from typing import Any, Protocol


class Observer(Protocol):
    def start(self, system: Any) -> None: ...

    def observe(self, system: Any) -> None: ...

    def finish(self, system: Any, interrupted: bool) -> None: ...


class Interrupted(Exception):
    """The run was stopped by SIGINT after a clean final checkpoint."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step = step


def run(system: Any, steps: int, observers: Sequence[Observer] = ()) -> Any:
    """Advance ``system`` by ``steps`` steps, calling every observer after each."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set()) if in_main else None
    try:
        for obs in observers:
            obs.start(system)
        for _ in range(steps):
            if stop.is_set():
                break
            system.step()
            for obs in observers:
                obs.observe(system)
        for obs in observers:
            obs.finish(system, stop.is_set())
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    if stop.is_set():
        raise Interrupted(system.step_count)
    return system
