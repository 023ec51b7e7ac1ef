"""The time loop: advance a system until a stop condition, and hand it to observers.

A *system* is any :class:`~mfld.discretizations.system.System`; the loop uses
only its ``step()``, ``step_count`` and ``time``. *Observers* (a
:class:`Recorder`, and in a run the progress bar and the checkpoint writer) see
the system after every step and decide themselves whether they are due. The
loop stops after ``steps`` steps, at time ``until``, or when a condition on the
system (for example an observable below a tolerance, :func:`below`) holds,
whichever comes first.

Ctrl-C (SIGINT) and SIGTERM (what batch schedulers send) do not interrupt a
step half-way: they are caught, the current step is completed, observers finish
(a checkpoint writer writes a final frame) and :class:`Interrupted` is raised.
Under MPI the processes agree before every step (one small Allreduce), so a
signal to any one of them stops them all at the same step.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from .system import System


class Observer(Protocol):
    def start(self, system: System) -> None: ...

    def observe(self, system: System) -> None: ...

    def finish(self, system: System, interrupted: bool) -> None: ...


StopCondition = Callable[[System], bool]


class Interrupted(Exception):
    """The run was stopped by SIGINT or SIGTERM after its observers finished (a final checkpoint is written).

    ``detail`` replaces the default message where the caller knows better what was saved.
    """

    def __init__(self, step: int, detail: str | None = None) -> None:
        super().__init__(detail or f"interrupted at step {step}")
        self.step, self.detail = step, detail


def run(
    system: System,
    steps: int | None = None,
    observers: Sequence[Observer] = (),
    until: float | None = None,
    stop: StopCondition | None = None,
) -> System:
    """Advance ``system`` by ``steps`` steps, to time ``until`` or until ``stop(system)``, observing every step.

    At least one of ``steps`` and ``until`` bounds the run. ``until`` stops at
    the first step whose time reaches it (to a relative 1e-9, so that ``T / eta``
    steps reach ``T`` despite rounding); a system that chooses its own steps and
    has a ``horizon`` (adaptive grids) is told ``until`` there, and lands on it.
    """
    if steps is None and until is None:
        raise ValueError("give the loop a number of steps or an end time")
    if steps is not None and steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    end = math.inf if until is None else until - 1e-9 * max(1.0, abs(until))
    interrupt = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM) if in_main else ()
    previous = {sig: signal.signal(sig, lambda *_: interrupt.set()) for sig in signals}
    comm = system.functional.comm
    interrupted = False

    def everyone_asked() -> bool:
        # A signal may reach one process of an MPI job only: all stop together, or the others would wait forever.
        return comm.sum(float(interrupt.is_set())) > 0 if comm.size > 1 else interrupt.is_set()

    if until is not None and hasattr(system, "horizon"):
        system.horizon = until
    try:
        for obs in observers:
            obs.start(system)
        taken = 0
        while (steps is None or taken < steps) and system.time < end:
            interrupted = everyone_asked()
            if interrupted:
                break
            system.step()
            taken += 1
            for obs in observers:
                obs.observe(system)
            if stop is not None and stop(system):
                break
        for obs in observers:
            obs.finish(system, interrupted)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if until is not None and hasattr(system, "horizon"):
            system.horizon = math.inf
    if interrupted:
        raise Interrupted(system.step_count)
    return system


class Recorder:
    """Record ``compute(system) -> {name: value}`` every ``every`` steps, in memory and optionally into ``sink``.

    Records the initial state (unless ``record_start`` is false: a resumed run
    already has it) and the final one (unless ``record_end`` is false). ``after``
    skips records at times up to it (to average over a stationary tail).
    ``series()`` returns ``{"step", "time", name...}`` as arrays.
    """

    def __init__(
        self,
        compute: Callable[[System], dict[str, float]],
        every: int = 1,
        record_start: bool = True,
        sink: Callable[[int, float, dict[str, float]], None] | None = None,
        after: float = -math.inf,
        record_end: bool = True,
    ) -> None:
        if every < 1:
            raise ValueError(f"record every >= 1 steps, got {every}")
        self.compute, self.every, self.record_start, self.sink = compute, int(every), record_start, sink
        self.record_end = record_end
        self.after = after
        self.last_step: int | None = None
        self.latest: dict[str, float] = {}
        self.records: list[tuple[int, float, dict[str, float]]] = []

    def _record(self, system: System) -> None:
        self.last_step = system.step_count
        if system.time <= self.after:
            return
        self.latest = self.compute(system)
        self.records.append((system.step_count, system.time, self.latest))
        if self.sink is not None:
            self.sink(system.step_count, system.time, self.latest)

    def start(self, system: System) -> None:
        if self.record_start:
            self._record(system)
        else:
            self.last_step = system.step_count

    def observe(self, system: System) -> None:
        if system.step_count % self.every == 0:
            self._record(system)

    def finish(self, system: System, interrupted: bool) -> None:
        if self.record_end and self.last_step != system.step_count:
            self._record(system)

    def series(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The records as arrays: ``step``, ``time`` and each recorded name."""
        if names is None:
            names = self.records[0][2] if self.records else []
        names = list(names)
        out = {
            "step": np.array([r[0] for r in self.records], dtype=np.int64),
            "time": np.array([r[1] for r in self.records]),
        }
        out.update({k: np.array([r[2][k] for r in self.records]) for k in names})
        return out


def below(recorder: Recorder, name: str, tol: float) -> StopCondition:
    """Stop once the recorder's latest value of ``name`` is below ``tol`` (checked after each step)."""

    def condition(system: System) -> bool:
        return recorder.last_step == system.step_count and name in recorder.latest and recorder.latest[name] < tol

    return condition
