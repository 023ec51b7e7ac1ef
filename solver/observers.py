"""Observers of a run's time loop: progress and checkpoints.

Each is small and independent; the loop (:mod:`mfld.discretizations.loop`)
calls ``start``, ``observe`` after every step and ``finish`` once. The
observables are recorded by the loop's :class:`~mfld.discretizations.loop.Recorder`,
whose sink is the checkpoint store. Data flows one way: system -> observer -> sink.
"""

from __future__ import annotations

import math
from typing import Protocol

from tqdm.auto import tqdm

from mfld.discretizations.grid import FieldState
from mfld.discretizations.loop import Recorder
from mfld.discretizations.particles import ParticleState
from mfld.discretizations.system import System


class Progress:
    """A tqdm bar, shown only for runs longer than ``delay`` seconds (or never)."""

    def __init__(self, total: int, enabled: bool | None = None, delay: float = 2.0, metrics: Recorder | None = None):
        self.total, self.enabled, self.delay, self.metrics = total, enabled, delay, metrics
        self.bar: tqdm | None = None

    def start(self, system: System) -> None:
        # tqdm's disable=None hides the bar when stderr is not a terminal ("auto").
        disable = {True: False, False: True, None: None}[self.enabled]
        delay = 0.0 if self.enabled else self.delay
        self.bar = tqdm(total=self.total, disable=disable, delay=delay, unit="step", desc="mfld")

    def observe(self, system: System) -> None:
        self.bar.update(1)
        if self.metrics is not None and self.metrics.last_step == system.step_count:
            obj = self.metrics.latest.get("objective", math.nan)
            self.bar.set_postfix(objective=f"{obj:.6g}", refresh=False)

    def finish(self, system: System, interrupted: bool) -> None:
        self.bar.close()


class Store(Protocol):
    """Where checkpoints go (:class:`~mfld.solver.checkpoint.CheckpointStore`)."""

    def commit(self, state: ParticleState | FieldState) -> None: ...

    def has_frames(self) -> bool: ...

    def pending(self) -> bool: ...


class Checkpoints:
    """Commit the system's state to ``store`` every ``every`` steps and at the end."""

    def __init__(self, store: Store, every: int) -> None:
        self.store, self.every = store, int(every)
        self.last_step: int | None = None

    def _commit(self, system: System) -> None:
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
        if self.last_step != system.step_count or self.store.pending():
            self._commit(system)
