"""Observers of the time loop: metrics, progress and checkpoints.

Each is small and independent; the loop calls ``start``, ``observe`` after every
step and ``finish`` once. Data flows one way: system -> observer -> sink.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm


class Metrics:
    """Compute ``compute(system) -> dict`` every ``every`` steps and pass it to ``sink``.

    Also records the initial state (at ``start``, unless ``record_start`` is
    false: a resumed run already has it) and the final one (at ``finish``).
    """

    def __init__(
        self,
        compute: Callable[[Any], dict[str, float]],
        sink: Callable[..., None],
        every: int,
        record_start: bool = True,
    ) -> None:
        self.compute, self.sink, self.every = compute, sink, int(every)
        self.record_start = record_start
        self.last_step: int | None = None
        self.latest: dict[str, float] = {}

    def _record(self, system: Any) -> None:
        self.latest = self.compute(system)
        self.sink(system.step_count, system.time, self.latest)
        self.last_step = system.step_count

    def start(self, system: Any) -> None:
        if self.record_start:
            self._record(system)
        else:
            self.last_step = system.step_count

    def observe(self, system: Any) -> None:
        if system.step_count % self.every == 0:
            self._record(system)

    def finish(self, system: Any, interrupted: bool) -> None:
        if self.last_step != system.step_count:
            self._record(system)


class Progress:
    """A tqdm bar, shown only for runs longer than ``delay`` seconds (or never)."""

    def __init__(self, total: int, enabled: bool | None = None, delay: float = 2.0, metrics: Metrics | None = None):
        self.total, self.enabled, self.delay, self.metrics = total, enabled, delay, metrics
        self.bar: Any = None

    def start(self, system: Any) -> None:
        # tqdm's disable=None hides the bar when stderr is not a terminal ("auto").
        disable = {True: False, False: True, None: None}[self.enabled]
        delay = 0.0 if self.enabled else self.delay
        self.bar = tqdm(total=self.total, disable=disable, delay=delay, unit="step", desc="mfld")

    def observe(self, system: Any) -> None:
        self.bar.update(1)
        if self.metrics is not None and self.metrics.last_step == system.step_count:
            obj = self.metrics.latest.get("objective", math.nan)
            self.bar.set_postfix(objective=f"{obj:.6g}", refresh=False)

    def finish(self, system: Any, interrupted: bool) -> None:
        self.bar.close()


class Checkpoints:
    """Commit the system's state to ``store`` every ``every`` steps and at the end."""

    def __init__(self, store: Any, every: int) -> None:
        self.store, self.every = store, int(every)
        self.last_step: int | None = None

    def _commit(self, system: Any) -> None:
        self.store.commit(system.state())
        self.last_step = system.step_count

    def start(self, system: Any) -> None:
        if not self.store.has_frames():
            self._commit(system)
        else:
            self.last_step = system.step_count

    def observe(self, system: Any) -> None:
        if system.step_count % self.every == 0:
            self._commit(system)

    def finish(self, system: Any, interrupted: bool) -> None:
        if self.last_step != system.step_count or self.store.pending():
            self._commit(system)
