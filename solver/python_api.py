"""The Python API, for notebooks and scripts: run a configuration in memory or into a file, load a saved run.

    import mfld
    run = mfld.run(set={"time.steps": 400})       # the built-in default, shorter; nothing is written
    run.series["objective"]                        # the recorded observables, with run.series["time"]
    run.state                                      # the final measure (positions, or a density)
    fig = run.figure()                             # a matplotlib Figure of the observables
    saved = mfld.load("mfld-run.h5")               # the same view of a file written by `mfld run`

A :class:`Run` reads the same whether it was kept in memory or read from a file: its configuration,
its observables as arrays, its saved frames (:meth:`Run.snapshot`), and figures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mfld.config import Config, load_config
from mfld.discretizations.loop import Interrupted, Observer
from mfld.discretizations.mesh import Grid
from mfld.discretizations.state import DensityState, ParticleState, State
from mfld.discretizations.system import System
from mfld.storage import CheckpointError, CheckpointReader, Snapshot
from mfld.storage.elements import components
from mfld.storage.reader import measure_xarray, snapshot_of

from . import build

log = logging.getLogger("mfld")
ConfigLike = str | Path | Mapping[str, Any] | None


class MemoryRecord:
    """What a run kept in memory, read the way :class:`~mfld.storage.CheckpointReader` reads a file."""

    def __init__(
        self,
        config: Config,
        data: dict[str, np.ndarray],
        system: System,
        records: list[tuple[int, float, dict[str, float]]],
        states: list[State],
    ) -> None:
        self.path: Path | None = None
        self.config, self.data, self.kind = config, data, system.kind
        self._grid: Grid | None = getattr(system, "grid", None)
        self.has_density = self._grid is not None
        self._records, self._states = records, states
        self.steps = np.array([s.step for s in states], dtype=np.int64)
        self.times = np.array([s.time for s in states])

    def observables(self) -> dict[str, dict[str, np.ndarray]]:
        """``{name: {"step", "time", "value"}}`` for every recorded observable."""
        names = self._records[0][2] if self._records else {}
        step = np.array([r[0] for r in self._records], dtype=np.int64)
        time = np.array([r[1] for r in self._records])
        return {k: {"step": step, "time": time, "value": np.array([r[2][k] for r in self._records])} for k in names}

    def grid(self) -> Grid:
        if self._grid is None:
            raise CheckpointError("this run holds particles, not a density on a grid")
        return self._grid

    def snapshot(self, step: int | None = None) -> Snapshot:
        """The measure at a kept ``step`` (default: the last)."""
        hits = np.flatnonzero(self.steps == (self.steps[-1] if step is None else step))
        if hits.size == 0:
            raise CheckpointError(f"step {step} is not kept; kept steps: {self.steps.tolist()}")
        state = self._states[int(hits[-1])]
        if not isinstance(state, ParticleState | DensityState):
            raise CheckpointError(f"a kept state of a run in memory is a {type(state).__name__}")
        return snapshot_of(
            state, None, self.config, self.data, self.kind, self.grid() if isinstance(state, DensityState) else None
        )


class Run:
    """A run, finished or stopped, in memory or in a file: what :func:`run` and :func:`load` return.

    ``config``: the configuration (with the data's sizes); ``kind``: ``particles``, ``grid``, ``spectral``
    or ``stationary``; ``path``: the file, or None; ``series``: the observables, ``{"step", "time",
    name...}`` as arrays; ``state``: the last frame's state; ``system``: the system at its last step
    (None for a loaded file); ``interrupted``: whether a signal stopped the run early.
    """

    def __init__(
        self, record: CheckpointReader | MemoryRecord, system: System | None = None, interrupted: bool = False
    ) -> None:
        self.record, self.system, self.interrupted = record, system, interrupted

    @property
    def config(self) -> Config:
        return self.record.config

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def path(self) -> Path | None:
        return self.record.path

    @property
    def steps(self) -> np.ndarray:
        """The steps of the saved (or kept) frames."""
        return self.record.steps

    @property
    def series(self) -> dict[str, np.ndarray]:
        """``{"step", "time", name...}``: every observable at the recorded steps (one step and time axis)."""
        obs = self.record.observables()
        if not obs:
            return {"step": np.zeros(0, dtype=np.int64), "time": np.zeros(0)}
        first = next(iter(obs.values()))
        return {"step": first["step"], "time": first["time"], **{k: v["value"] for k, v in obs.items()}}

    def snapshot(self, step: int | None = None) -> Snapshot:
        """The measure at a saved ``step`` (default: the last), as host arrays with the run's config and data."""
        return self.record.snapshot(step)

    @property
    def state(self) -> ParticleState | DensityState:
        """The last frame: positions and noise state, or the density (what a resume continues from)."""
        return self.snapshot().state()

    def components(self) -> list[str]:
        """Names of the measure's coordinates (:func:`mfld.storage.elements.components`): ``u_1 .. u_d``, ``b`` for a
        feature map with bias, ``a_1 .. a_T`` first for the classical objective's ``theta = (a, w)``."""
        return components(self.config, self.snapshot().points.shape[1])

    def to_dataframe(self) -> Any:  # a pandas.DataFrame (pandas is optional)
        """The observables as a ``pandas.DataFrame``, one row per recorded step, indexed by time."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe needs pandas: `pip install pandas`") from None
        return pd.DataFrame(self.series).set_index("time")

    def to_xarray(self) -> Any:  # an xarray.DataArray (xarray is optional)
        """Every saved frame of the measure as an ``xarray.DataArray`` (:func:`mfld.storage.reader.measure_xarray`):
        particles ``(time, particle, component)``, a density ``(time, <component>...)`` with the cell centres."""
        return measure_xarray(self.record)

    def figure(self) -> Figure:
        """The observables against time (:func:`mfld.solver.plotting.observables_figure`)."""
        from .plotting import observables_figure

        return observables_figure(self.record)

    def measure_figure(self, steps: Sequence[int] | None = None) -> Figure:
        """The measure at a few saved steps (:func:`mfld.solver.plotting.measure_figure`)."""
        from .plotting import measure_figure

        return measure_figure(self.record, list(steps) if steps is not None else None)

    def __repr__(self) -> str:
        where = f"{str(self.path)!r}" if self.path is not None else "in memory"
        last = f"step {int(self.steps[-1])}" if self.steps.size else "no frame"
        return f"<mfld.Run {self.kind} {where}, {last}{', interrupted' if self.interrupted else ''}>"


def resolve_config(config: ConfigLike = None, set: Mapping[str, Any] | None = None) -> Config:
    """A full configuration from None (the built-in default), a shipped name or TOML path, or a mapping.

    A mapping is either a whole configuration or a partial one (nested tables or dotted keys), merged
    over the default; ``set`` (dotted keys) is merged last.
    """
    values = None if set is None else {k: _plain(v) for k, v in dict(set).items()}
    if config is None or isinstance(config, str | Path):
        return load_config(config, values=values)
    if not isinstance(config, Mapping):
        raise TypeError(
            f"config must be None, a file name, a shipped configuration's name or a mapping, "
            f"got {type(config).__name__}"
        )
    return load_config(values={**_dotted(config), **(values or {})})


def _plain(value: Any) -> Any:
    """NumPy scalars (``numpy.int64(80)`` from an array or a loop over one) as the Python numbers they hold, in
    lists too: the configuration's types are TOML's."""
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _dotted(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, Mapping):
            out.update(_dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = _plain(v)
    return out


class _Last:
    """Keep the system at the end of a run (an observer)."""

    system: System | None = None

    def start(self, system: System) -> None:
        self.system = system

    def observe(self, system: System) -> None:
        pass

    def finish(self, system: System, interrupted: bool) -> None:
        self.system = system


def _check_arguments(values: Any, out: Any, observers: Any) -> None:
    """Refuse, before any work, arguments of the wrong type, naming the argument and what it takes."""
    if values is not None and not isinstance(values, Mapping):
        raise TypeError(
            f"set must be a mapping of dotted keys to values ({{'time.steps': 5}}), got {type(values).__name__} "
            f"{values!r}"
        )
    if out is not None and not isinstance(out, str | Path):
        raise TypeError(f"out must be a file name (str or Path) or None, got {type(out).__name__} {out!r}")
    if isinstance(observers, str | bytes) or not isinstance(observers, Sequence):
        raise TypeError(f"observers must be a list of observers, got {type(observers).__name__} {observers!r}")
    for k, obs in enumerate(observers):
        missing = [m for m in ("start", "observe", "finish") if not callable(getattr(obs, m, None))]
        if missing:
            raise TypeError(
                f"observers[{k}] ({type(obs).__name__}) lacks {', '.join(missing)}: an observer has start(system), "
                "observe(system) and finish(system, interrupted)"
            )


def run(
    config: ConfigLike = None,
    out: str | Path | None = None,
    *,
    set: Mapping[str, Any] | None = None,
    observers: Sequence[Observer] = (),
    overwrite: bool = False,
) -> Run:
    """Run MFLD from the prior: the same steps, observables and frames as ``mfld run``.

    ``config``: None (the built-in default), a shipped configuration's name (``"grid-1d"``), a TOML
    file, or a mapping merged over the default (``{"particles": {"N": 500}}`` or ``{"particles.N":
    500}``); ``set``: dotted keys merged last. ``out``: a checkpoint file to write (None: nothing is
    written, the frames are kept in memory at the steps a file would save). ``observers``: objects with
    ``start(system)``, ``observe(system)`` (after every step) and ``finish(system, interrupted)``.

    Ctrl-C (SIGINT) or SIGTERM ends the run after the current step: the returned run holds what was
    recorded up to there, with ``interrupted`` True (and, with ``out``, its final frame in the file).
    """
    _check_arguments(set, out, observers)
    cfg = resolve_config(config, set)
    if out is None:
        done = build.run_in_memory(cfg, observers)
        if done.interrupted:
            log.warning(f"mfld: interrupted at step {done.system.step_count}; returning the run up to there")
        record = MemoryRecord(done.config, done.data, done.system, done.recorder.records, done.frames.states)
        return Run(record, done.system, done.interrupted)
    last = _Last()
    try:
        path = build.start(cfg, out, overwrite=overwrite, observers=[*observers, last])
    except Interrupted as e:
        if last.system is None:
            raise
        log.warning(f"mfld: {e}; the final frame is written to {str(out)!r}, returning the run up to there")
        return Run(CheckpointReader(out), last.system, interrupted=True)
    return Run(CheckpointReader(path), last.system)


def load(path: str | Path) -> Run:
    """A saved run (``mfld run``, ``mfld resume``, ``mfld stationary``, or :func:`run` with ``out``), read-only."""
    return Run(CheckpointReader(path))
