"""Reading a checkpoint: :class:`CheckpointReader` (saved steps, observables, measures) and
:class:`Snapshot`, one saved frame as host arrays with its run's configuration and data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mfld.config import FIRST_VERSION, Config, from_toml, to_toml
from mfld.discretizations.kinds import DISCRETIZATIONS
from mfld.discretizations.mesh import Grid
from mfld.discretizations.state import DensityState, ParticleState

from .checks import DATA_NAMES, bounded_frame, checked, clock_problems, kind_problems, layout_problems, read_bounded
from .commit import CheckpointError
from .elements import (
    FIELDS,
    GROUPS,
    committed_counts,
    components,
    frame_element,
    frame_elements,
    holds_density,
    state_type,
)
from .sharded import missing_shards, shard_problems, sharded


@dataclass
class Snapshot:
    """The measure at one saved step as host arrays, with the configuration and data of its run.

    Nothing here depends on the backend the run used: build the problem with
    ``mfld.solver.build.build_problem(snap.config, snap.data, backend="numpy")``.
    """

    path: Path | None
    config: Config
    data: dict[str, np.ndarray]
    kind: str
    step: int
    time: float
    points: np.ndarray
    weights: np.ndarray
    rng_state: str | None = None
    density: np.ndarray | None = None
    grid: Grid | None = None
    history: tuple[np.ndarray, ...] = ()
    solver: Mapping[str, np.ndarray] = field(default_factory=dict)
    control: np.ndarray | None = None

    def state(self) -> ParticleState | DensityState:
        """What a system needs to continue from this frame."""
        if self.density is None:
            return ParticleState(self.points, self.step, self.time, str(self.rng_state), self.history, self.solver)
        return DensityState(self.density, self.step, self.time, self.history, self.control)


def snapshot_of(
    state: ParticleState | DensityState,
    path: Path | None,
    config: Config,
    data: dict[str, np.ndarray],
    kind: str,
    grid: Grid | None,
) -> Snapshot:
    """The :class:`Snapshot` of a state: particles with equal weights, or a density's cell centres and masses."""
    if isinstance(state, ParticleState):
        W = state.positions
        total = int(config["particles"]["N"])
        return Snapshot(
            path,
            config,
            data,
            kind,
            state.step,
            state.time,
            W,
            np.full(W.shape[0], 1.0 / total),
            state.rng_state,
            history=state.history,
            solver=state.solver,
        )
    if grid is None:
        raise CheckpointError("a density state needs its grid")
    return Snapshot(
        path,
        config,
        data,
        kind,
        state.step,
        state.time,
        grid.centers(),
        state.density.ravel() * grid.cell_volume,
        None,
        state.density,
        grid,
        state.history,
        control=state.control,
    )


class CheckpointReader:
    """Read-only view of a checkpoint: saved steps, observables and measures."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with checked(self.path) as f:
                self._read(f)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, OSError) as e:  # a part missing or of the wrong kind
            raise CheckpointError(
                f"{str(self.path)!r} is a malformed mfld checkpoint: {type(e).__name__}: {e}"
            ) from None

    def _read(self, f: h5py.File) -> None:
        # The kind first: a file of a discretisation that is not registered here fails on its name, not on its
        # configuration's.
        self.kind = str(f["parameters"].attrs["mfld_kind"])
        stored = f["parameters"].attrs.get("reference_objective")
        self.reference_objective = float(stored) if stored is not None else None  # Obj(mu*) of a grid run's gap
        if holds_density(self.kind) is None:
            raise CheckpointError(
                f"{str(self.path)!r} names an unknown kind of run {self.kind!r} (the registered "
                "discretisations are " + ", ".join(DISCRETIZATIONS) + "; a file of a discretisation "
                "that a plug-in offers is read once its package is installed: entry points "
                "`mfld.discretizations`)"
            )
        self.config_text = str(f["parameters"].attrs["config"])
        prov = f["parameters"].get("provenance")
        self.provenance = {k: str(v) for k, v in prov.attrs.items()} if prov is not None else {}
        try:
            self.config = from_toml(self.config_text, written_by=self.provenance.get("mfld", FIRST_VERSION))
        except ValueError as e:
            raise CheckpointError(f"{str(self.path)!r} holds an invalid configuration: {e}") from None
        self.data = {k: read_bounded(self.path, v) for k, v in f["parameters/data"].items() if k in DATA_NAMES}
        self.has_density = FIELDS in f
        self.sharded = sharded(f)  # positions over shard files: a file written sharded is continued sharded
        missing = missing_shards(self.path, f)
        if missing:
            raise CheckpointError(
                f"{str(self.path)!r} is the master of a sharded run whose shard files are missing: "
                f"{', '.join(missing)}; keep them in the same folder as the master (move them together)"
            )
        wrong = shard_problems(self.path, f) if self.sharded else []
        if wrong:
            raise CheckpointError(
                f"{str(self.path)!r} is the master of a sharded run whose shards do not match it: {wrong[0]}"
                + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "")
                + "; restore the run's own shard files beside it"
            )
        problems = kind_problems(self.kind, self.config, self.has_density)
        problems = problems or layout_problems(f, self.kind, self.config, self.data, self.has_density)
        problems = problems or clock_problems(f, self.kind, self.config["output"]["metrics_every"])
        if not problems:
            self.frames, self.records = committed_counts(f)
            el = frame_element(f)
            self.capacity = el["step"].shape[0] if el is not None else 0  # rows reserved (a run that stopped early)
            self.steps = el["step"][: self.frames] if el is not None else np.zeros(0, dtype=np.int64)
            self.times = el["time"][: self.frames] if el is not None else np.zeros(0)
        if problems:
            raise CheckpointError(
                f"{str(self.path)!r} is a malformed mfld checkpoint: {problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            )

    @contextlib.contextmanager
    def _open(self) -> Iterator[h5py.File]:
        """The file for reading; a chunk whose checksum fails, or that cannot be read, is one clear error."""
        try:
            with h5py.File(self.path, "r") as f:
                yield f
        except OSError as e:
            raise CheckpointError(
                f"{str(self.path)!r}: stored data cannot be read (a failed checksum: the file "
                f"was damaged after it was written, or a truncated file): {e}"
            ) from None

    def observables(self) -> dict[str, dict[str, np.ndarray]]:
        """``{name: {"step", "time", "value"}}`` for every recorded observable."""
        with self._open() as f:
            return {
                name: {k: el[k][: self.records] for k in ("step", "time", "value")}
                for name, el in f["observables"].items()
            }

    def snapshot(self, step: int | None = None, rows: slice = slice(None)) -> Snapshot:
        """The measure at ``step`` (default: the last saved frame), as host arrays.

        ``rows`` selects a block of particles (a process's share when resuming a sharded run).
        """
        if self.steps.size == 0:
            raise CheckpointError(
                f"{str(self.path)!r} holds no saved frame: its run stopped before the first one; "
                "start it again with `mfld run ... --overwrite`"
            )
        if step is None:
            k = self.steps.size - 1
        else:
            hits = np.flatnonzero(self.steps == step)
            if hits.size == 0:
                raise CheckpointError(
                    f"step {step} is not saved in {str(self.path)!r}; saved steps: {self.steps.tolist()}"
                )
            k = int(hits[-1])
        step_k, time_k = int(self.steps[k]), float(self.times[k])
        kind = state_type(self.kind)
        group = GROUPS[kind.group]
        arrays: dict[str, np.ndarray | str] = {}
        with self._open() as f:
            for path in frame_elements(f):
                if not path.startswith(f"{group}/"):
                    continue
                value = f[f"{path}/value"]
                bounded_frame(self.path, value)
                if value.dtype.kind in "SO":  # text: the noise state
                    text = value[k]
                    arrays[path.rsplit("/", 1)[1]] = text.decode() if isinstance(text, bytes) else str(text)
                else:  # an array along the particles is read for the rows asked (the others whole)
                    name = path.rsplit("/", 1)[1]
                    along = (kind.dimensions(name) or ())[:1] == ("particle",)
                    arrays[name] = value[k, rows] if along else value[k]
        try:
            state = kind.from_arrays(step_k, time_k, arrays)
        except (KeyError, ValueError) as e:
            raise CheckpointError(
                f"{str(self.path)!r}: the frame at step {step_k} is not a {kind.__name__}: {type(e).__name__}: {e}"
            ) from None
        return snapshot_of(
            state, self.path, self.config, self.data, self.kind, self.grid() if group == FIELDS else None
        )

    def grid(self) -> Grid:
        """The :class:`~mfld.discretizations.mesh.Grid` of a density file."""
        with self._open() as f:
            if FIELDS not in f:
                raise CheckpointError(f"{str(self.path)!r} holds particles, not a density on a grid")
            a = f[FIELDS].attrs
            return Grid(tuple(a["lower"].tolist()), tuple(a["upper"].tolist()), tuple(int(c) for c in a["cells"]))

    def to_xarray(self) -> Any:  # an xarray.DataArray (xarray is optional)
        """Every saved frame of the measure as an ``xarray.DataArray`` (:func:`measure_xarray`)."""
        return measure_xarray(self)


def measure_xarray(record: Any) -> Any:
    """Every saved frame of a record (a :class:`CheckpointReader`, or a run kept in memory) as an
    ``xarray.DataArray``: particles ``(time, particle, component)``, a density ``(time, <component>...)`` with the
    cell centres as coordinates, the components named by :func:`components`; ``step`` beside ``time``."""
    try:
        import xarray as xr
    except ImportError:
        raise ImportError("to_xarray needs xarray: `pip install xarray`") from None
    snaps = [record.snapshot(int(s)) for s in record.steps]
    if not snaps:
        raise CheckpointError("the run holds no saved frame to convert")
    names = components(record.config, snaps[-1].points.shape[1])
    coords: dict[str, Any] = {"time": np.asarray(record.times), "step": ("time", np.asarray(record.steps))}
    attrs = {"long_name": "mu_t", "kind": record.kind, "config": to_toml(record.config)}
    grid = snaps[-1].grid
    if snaps[-1].density is not None and grid is not None:
        coords.update(dict(zip(names, grid.axes(), strict=True)))
        value = np.stack([s.density for s in snaps if s.density is not None])
        return xr.DataArray(value, dims=["time", *names], coords=coords, name="density", attrs=attrs)
    coords["component"] = names
    value = np.stack([s.points for s in snaps])
    return xr.DataArray(value, dims=["time", "particle", "component"], coords=coords, name="position", attrs=attrs)


def load(path: str | Path, step: int | None = None) -> Snapshot:
    """The measure saved at ``step`` (default: the last) in checkpoint ``path``, as host arrays with its config."""
    return CheckpointReader(path).snapshot(step)
