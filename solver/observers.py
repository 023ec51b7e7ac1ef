"""Observers of a run's time loop: progress, checkpoints and frames kept in memory.

Each is small; the loop (:mod:`mfld.discretizations.loop`) calls ``start``,
``observe`` after every step and ``finish`` once, in the order given. The
observables are recorded by the loop's :class:`~mfld.discretizations.loop.Recorder`,
whose sink is the checkpoint store; :class:`Progress` reads the recorder's latest
values.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Protocol

from mfld.config.progress import tqdm
from mfld.discretizations.loop import Recorder
from mfld.discretizations.state import State
from mfld.discretizations.system import System

log = logging.getLogger("mfld")


class Progress:
    """Progress of a run: a tqdm bar on a terminal, a logged line every tenth of the run elsewhere.

    ``enabled`` None ("auto") shows the bar on a terminal and the lines when
    stderr is a file or a pipe (batch jobs, CI), in both cases only for runs
    longer than ``delay`` seconds; True forces the bar, False shows nothing.
    """

    def __init__(self, total: int, enabled: bool | None = None, delay: float = 2.0, metrics: Recorder | None = None):
        self.total, self.enabled, self.delay, self.metrics = total, enabled, delay, metrics
        self.bar = tqdm(disable=True)  # replaced in start
        self._lines = False
        self._t0 = 0.0
        self._next = 0

    def start(self, system: System) -> None:
        self._t0 = time.monotonic()
        self._start_step = system.step_count
        self._lines = self.enabled is None and not sys.stderr.isatty()
        self._next = max(1, self.total // 10)
        disable = self._lines or self.enabled is False
        delay = 0.0 if self.enabled else self.delay
        self.bar = tqdm(total=self.total, disable=disable, delay=delay, unit="step", desc="mfld")

    def _objective(self, system: System) -> float | None:
        if self.metrics is not None and self.metrics.last_step == system.step_count:
            return self.metrics.latest.get("objective", math.nan)
        return None

    def observe(self, system: System) -> None:
        obj = self._objective(system)
        if not self._lines:
            self.bar.update(1)
            if obj is not None:
                self.bar.set_postfix(objective=f"{obj:.6g}", refresh=False)
            return
        done = system.step_count - self._start_step
        elapsed = time.monotonic() - self._t0
        if done >= self._next or done == self.total:
            self._next = done + max(1, self.total // 10)
            if elapsed >= self.delay:
                rate = done / elapsed
                left = (self.total - done) / rate if rate > 0 else math.inf
                log.info(
                    f"step {system.step_count} ({done}/{self.total}, {100 * done / max(self.total, 1):.0f}%), "
                    f"t = {system.time:.6g}, {elapsed:.0f} s elapsed, about {left:.0f} s left"
                )

    def finish(self, system: System, interrupted: bool) -> None:
        self.bar.close()


class Store(Protocol):
    """Where checkpoints go (:class:`~mfld.storage.CheckpointStore`): every array of a committed state
    is kept, the solver's among them, so a resume continues the run exactly."""

    def commit(self, state: State) -> None: ...

    def has_frames(self) -> bool: ...

    def pending(self) -> bool: ...

    def commit_observables(self) -> None: ...

    def finish(self) -> None: ...


class Checkpoints:
    """Commit the system's state to ``store`` every ``every`` steps and at the end."""

    def __init__(self, store: Store, every: int, check: Callable[[], None] | None = None) -> None:
        self.store, self.every = store, int(every)
        self.check = check if check is not None else (lambda: None)  # before each write: the lock still held
        self.last_step: int | None = None

    def _commit(self, system: System) -> None:
        self.check()
        self.store.commit(system.state())
        self.last_step = system.step_count

    def start(self, system: System) -> None:
        if not self.store.has_frames():
            self._commit(system)
        else:
            self.last_step = system.step_count

    def observe(self, system: System) -> None:
        if system.step_count % self.every == 0:
            self._commit(system)

    def finish(self, system: System, interrupted: bool) -> None:
        if self.last_step != system.step_count:
            self._commit(system)
        elif self.store.pending():  # the last frame is saved: only the final observables remain
            self.check()
            self.store.commit_observables()
        self.check()
        self.store.finish()


class Frames:
    """Keep the system's state in memory at the steps a checkpoint would save: the first, every ``every``, the last.

    The in-memory counterpart of :class:`Checkpoints` (host copies, as the file would hold them).
    """

    def __init__(self, every: int) -> None:
        self.every = int(every)
        self.states: list[State] = []

    def _keep(self, system: System) -> None:
        self.states.append(system.state())

    def start(self, system: System) -> None:
        self._keep(system)

    def observe(self, system: System) -> None:
        if system.step_count % self.every == 0:
            self._keep(system)

    def finish(self, system: System, interrupted: bool) -> None:
        if self.states[-1].step != system.step_count:
            self._keep(system)
