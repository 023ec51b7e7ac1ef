"""HDF5 checkpoints of mu_t in the H5MD 1.1 layout, crash-safe and resumable.

File layout (every time series is an H5MD element ``{step, time, value}``)::

    /h5md                         version = [1, 1]; author, creator groups
    /particles/mu/box             dimension = p, boundary = "none"
    /particles/mu/position        value: frames x N x p
    /particles/mu/rng_state       value: frames, JSON text of the noise generator
    /fields/mu                    value: frames x cells_1 x ... x cells_p (grid densities), with
                                  the cell centres w_k of each axis and time as dimension scales
                                  in the same group (netCDF tools and xarray's h5netcdf engine
                                  open it: group "fields/mu"); /fields attrs lower, upper, cells
    /fields/mu_previous           the density one step earlier (bdf2 only, for exact resume)
    /observables/<name>           value: records (objective, U, second_moment, ...)
    /parameters                   attrs: config (TOML text), mfld_kind
    /parameters/data/{X, Y, X_test, Y_test[, relevant]}

A run sharded over R processes (``mpiexec -n R mfld run``) writes each rank's
particles to its own file ``<name>.r<rank>of<R>.h5`` and rank 0 writes the master
file, whose ``position/value`` is an HDF5 virtual dataset over the shards (the
table ``position/sources`` records, per frame, which shard rows hold which global
particles), so loaders see one file, and a resume on another R just adds shards.

Frames and observables are committed in place (:mod:`mfld.solver.commit`): every time
series holds ``capacity`` preallocated rows, sized from the run's plan, and
``/parameters/committed`` counts the rows that hold data (``[frames, records]``),
written last. A commit costs the bytes of its frame, and a process killed during it
leaves the file as the previous commit left it. Rows past the count are padding:
step -1, time NaN, value undefined; mfld's readers never show them, and a run that
ends (finished or stopped by a signal) drops them (:meth:`CheckpointStore.finish`),
so only a killed process leaves them for other readers. A change of structure (the
first frame, a new observable, more rows than planned) writes a new file that
replaces the old one, once; a sharded run's master
(small: no positions) is rewritten at each commit the same way.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from mfld.discretizations.grid import FieldState, Grid
from mfld.discretizations.particles import ParticleState
from mfld.discretizations.system import State
from mfld.model.distributed import Communicator

from .commit import CheckpointError, available_memory, commit_rows, counter, counts, replace, rows
from .config import FIRST_VERSION, Config, from_toml
from .provenance import provenance

H5MD_VERSION = (1, 1)
_PARTICLES = "/particles/mu"
_FIELDS = "/fields"
_STR = h5py.string_dtype()


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment
        return "unknown"


def _checksums(f: h5py.File) -> bool:
    """Whether the file's datasets carry Fletcher-32 checksums (``output.checksum``), verified on every read."""
    return bool(f["parameters"].attrs.get("checksum", False))


def _element(group: h5py.Group, name: str, value_shape: tuple[int, ...], dtype: npt.DTypeLike) -> h5py.Group:
    el = group.create_group(name)
    check = _checksums(group.file) and np.dtype(dtype).kind != "O"
    el.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(256,), fletcher32=check)
    el.create_dataset("time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(256,), fletcher32=check)
    chunk = (1, *value_shape) if value_shape else (256,)
    el.create_dataset("value", shape=(0, *value_shape), maxshape=(None, *value_shape), dtype=dtype, chunks=chunk,
                      fletcher32=check)
    return el


def _append(el: h5py.Group, step: int, time: float, value: np.ndarray | float | str) -> None:
    k = el["step"].shape[0]
    for name in ("step", "time", "value"):
        el[name].resize(k + 1, axis=0)
    el["step"][k] = step
    el["time"][k] = time
    el["value"][k] = value


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
    previous: np.ndarray | None = None

    def state(self) -> ParticleState | FieldState:
        """What a system needs to continue from this frame."""
        if self.density is None:
            return ParticleState(self.points, self.step, self.time, str(self.rng_state))
        return FieldState(self.density, self.step, self.time, self.previous)


_COUNT = "parameters/committed"  # [frames, records]: the rows that hold data
_FRAME_ELEMENTS = (f"{_PARTICLES}/position", f"{_PARTICLES}/rng_state", f"{_FIELDS}/mu", f"{_FIELDS}/mu_previous")
Record = tuple[int, float, dict[str, float]]


def _counts(f: h5py.File) -> tuple[int, int]:
    """Committed frames and observables records: the counter, or whole lengths in a file without one."""
    c = f.get(_COUNT)
    if c is not None:
        found = counts(c, 2) if isinstance(c, h5py.Dataset) else None
        if found is None:
            raise CheckpointError(f"/{_COUNT} is not mfld's commit counter")
        return found[0], found[1]
    el = _frame_element(f)
    obs = [o for o in f["observables"].values() if isinstance(o, h5py.Group) and "step" in o]
    return (el["step"].shape[0] if el is not None else 0), (obs[0]["step"].shape[0] if obs else 0)


Frame = dict[str, np.ndarray | np.bytes_]
"""The rows one frame adds, by element: arrays, and the noise state as fixed-length text."""


def _frame(state: State) -> Frame:
    """The rows one frame of ``state`` adds, by element (the layouts of particles and of densities)."""
    if isinstance(state, ParticleState):
        return {f"{_PARTICLES}/position": np.asarray(state.positions),
                f"{_PARTICLES}/rng_state": np.bytes_(state.rng_state.encode())}
    if not isinstance(state, FieldState):
        raise TypeError(f"checkpoint files hold particle and density states, not {type(state).__name__}")
    out: Frame = {f"{_FIELDS}/mu": np.asarray(state.density)}
    if state.previous is not None:
        out[f"{_FIELDS}/mu_previous"] = np.asarray(state.previous)
    return out


def frame_bytes(state: State) -> int:
    """Bytes one frame of ``state`` adds to a checkpoint file."""
    return sum(v.nbytes for v in _frame(state).values())


def _blank(value: h5py.Dataset) -> np.ndarray | bytes:
    """The row of an element that a frame does not have (mu_previous before the second step)."""
    return b"" if value.dtype.kind == "S" else np.full(value.shape[1:], np.nan, dtype=value.dtype)


def _fits(f: h5py.File, frame: Frame, records: list[Record]) -> bool:
    """Whether the commit fits in rows the file already has (else its structure must change)."""
    if not isinstance(f.get(_COUNT), h5py.Dataset) or counts(f[_COUNT], 2) is None:
        return False
    k, r = _counts(f)
    for path in set(frame) | {p for p in _FRAME_ELEMENTS if p in f}:
        value = f.get(f"{path}/value")
        if value is None or value.shape[0] < k + bool(frame) or value.chunks is None:
            return False
        row = frame.get(path)
        if row is None:
            continue
        if row.dtype.kind == "S":
            if value.dtype.kind != "S" or value.dtype.itemsize < row.dtype.itemsize:
                return False
        elif value.shape[1:] != row.shape or value.dtype != row.dtype:
            return False
    names = {name for _, _, values in records for name in values}
    obs = f["observables"]
    return names <= set(obs) and all(el["value"].shape[0] >= r + len(records) for el in obs.values())


def _write_rows(f: h5py.File, frame: Frame, step: int, time: float,
                records: list[Record]) -> tuple[int, int]:
    """Write the frame into row ``frames`` of every frame element, the records after the last; the new counts."""
    k, r = _counts(f)
    clocks: set[int] = set()  # step and time shared by several elements are written once

    def tick(el: h5py.Group, rows_: int | slice, steps: object, times: object) -> None:
        if hash(el["step"].id) not in clocks:
            clocks.add(hash(el["step"].id))
            el["step"][rows_], el["time"][rows_] = steps, times

    if frame:
        for path in _FRAME_ELEMENTS:
            if path in f:
                el = f[path]
                tick(el, k, step, time)
                el["value"][k] = frame[path] if path in frame else _blank(el["value"])
    if records:
        rows_ = slice(r, r + len(records))
        for name, el in f["observables"].items():
            tick(el, rows_, [s for s, _, _ in records], [t for _, t, _ in records])
            el["value"][rows_] = [values.get(name, np.nan) for _, _, values in records]
    return k + bool(frame), r + len(records)


def _capacity(want: int, need: int, old: int) -> int:
    """Rows to give a series: the run's plan, else double what no longer fits."""
    return max(want, need, 2 * old if need > old else old)


def _copy_metadata(old: h5py.File, new: h5py.File) -> None:
    """Everything of ``old`` but its time series: H5MD metadata, parameters and data, the box or the grid."""
    old.copy(old["h5md"], new)
    params = new.create_group("parameters")
    params.attrs.update(old["parameters"].attrs)
    for name, obj in old["parameters"].items():
        if name != "committed":
            old.copy(obj, params)
    counter(params, "committed", _counts(old))
    new.create_group("observables")
    if f"{_PARTICLES}/box" in old:
        old.copy(old[f"{_PARTICLES}/box"], new.create_group(_PARTICLES))
    if _FIELDS in old:
        new.create_group(_FIELDS).attrs.update(old[_FIELDS].attrs)


def _lay_out(old: h5py.File | None, new: h5py.File, frame: Frame, names: set[str],
             need: tuple[int, int], want: tuple[int, int], trim: bool = False) -> None:
    """Give ``new`` (its metadata in place) the time series of ``old`` (None: a new file) with room for ``need``
    (at least ``want``) frames and records, and elements for ``frame`` and the observables ``names``; the
    committed rows of ``old`` are copied. ``trim``: exactly ``need`` rows, no padding."""
    k, r = _counts(old) if old is not None else (0, 0)
    checksum = _checksums(new)
    sources = {p: old[p] for p in _FRAME_ELEMENTS if old is not None and p in old}
    cap_frames = _capacity(want[0], need[0], max([e["value"].shape[0] for e in sources.values()], default=0))
    cap_frames = need[0] if trim else cap_frames
    for path in _FRAME_ELEMENTS:
        src = sources.get(path)
        template: np.ndarray | np.bytes_
        if path in frame:
            template = frame[path]
        elif src is None:  # an element neither this frame nor the old file has
            continue
        elif src["value"].dtype.kind in "OS":
            template = np.bytes_(b"")
        else:
            template = np.zeros(src["value"].shape[1:], dtype=src["value"].dtype)
        dtype = template.dtype
        if dtype.kind == "S":  # the noise state: fixed-length text, room to grow
            longest = max([len(x) for x in src["value"][:k]] if src is not None else [], default=0)
            dtype = np.dtype(f"S{2 * max(dtype.itemsize, longest, 32)}")
        group, name = path.rsplit("/", 1)
        if group == _FIELDS:
            el = _density_element(new[group], name, cap_frames, template.shape, dtype)
        else:  # the noise state is sampled with the positions: it shares their step and time (H5MD allows it)
            clock = new.get(f"{_PARTICLES}/position") if name == "rng_state" else None
            el = _slot_element(new.require_group(group), name, cap_frames, template.shape, dtype, clock=clock)
        for i in range(k):  # one frame at a time: memory stays one frame
            el["step"][i], el["time"][i] = (src["step"][i], src["time"][i]) if src is not None else (-1, np.nan)
            el["value"][i] = src["value"][i] if src is not None else _blank(el["value"])
    obs = new["observables"]
    old_obs = dict(old["observables"].items()) if old is not None else {}
    cap_records = _capacity(want[1], need[1], max([e["value"].shape[0] for e in old_obs.values()], default=0))
    cap_records = need[1] if trim else cap_records
    clock = None  # every record has every observable: one step and one time for all (hard links)
    for name in sorted(set(old_obs) | names):
        src = old_obs.get(name)
        el = _slot_element(obs, name, cap_records, (), np.float64, checksum, clock)
        if clock is None:
            clock = el
            if r:
                first = next(iter(old_obs.values()))
                el["step"][:r], el["time"][:r] = first["step"][:r], first["time"][:r]
        if r:
            el["value"][:r] = src["value"][:r] if src is not None else np.nan


def _slot_element(group: h5py.Group, name: str, capacity: int, row_shape: tuple[int, ...],
                  dtype: npt.DTypeLike, checksum: bool | None = None, clock: h5py.Group | None = None) -> h5py.Group:
    """An H5MD element ``{step, time, value}`` of ``capacity`` preallocated rows (step -1, time NaN until written).

    With ``clock`` (an element sampled at the same steps), ``step`` and ``time`` are hard links to its
    own, as H5MD allows: fewer series for a commit to touch.
    """
    if checksum is None:
        checksum = _checksums(group.file)
    el = group.create_group(name)
    if clock is not None:
        el["step"], el["time"] = clock["step"], clock["time"]
    else:
        rows(el, "step", capacity, (), np.int64, checksum, fill=-1)
        rows(el, "time", capacity, (), np.float64, checksum, fill=np.nan)
    # No fill value on text rows: netCDF-C aborts the reading process on a fixed-length string's fill value
    # (ncdump, netCDF4, xarray's netcdf4 engine); padding rows are past the count and never read.
    fill = None if row_shape or np.dtype(dtype).kind == "S" else np.nan
    rows(el, "value", capacity, row_shape, dtype, checksum, fill=fill)
    return el


class CheckpointStore:
    """Writer of one run's checkpoint file; observables are buffered until ``commit``.

    ``frames`` and ``records`` are how many frames and observables records the run is planned to
    add: the file is given room for them at its first commit, so every later commit is in place.
    """

    def __init__(self, path: str | Path, frames: int = 0, records: int = 0) -> None:
        self.path = Path(path)
        check_file(self.path)
        with h5py.File(self.path, "r") as f:
            k, r = _counts(f)
        self._want = (k + frames, r + records)
        self._pending: list[Record] = []
        self._new: tuple[Callable[[h5py.File], None], int] | None = None

    @classmethod
    def create(
        cls, path: str | Path, config_text: str, data: dict[str, np.ndarray], kind: str, dim: int,
        grid: Grid | None = None, author: str = "", checksum: bool = False, frames: int = 0, records: int = 0,
    ) -> CheckpointStore:
        """The store of a new file with metadata, configuration and data.

        Nothing is written until the first :meth:`commit`, which writes the whole file at once with
        its first frame and the observables buffered before it (one whole-file write before the
        in-place commits start; :meth:`write_metadata` writes it without a frame).
        ``grid`` (for densities) provides ``lower``, ``upper``, ``cells`` and ``axes()``;
        ``author`` defaults to the login name; ``frames`` and ``records`` as for the constructor.
        """
        path = Path(path)

        def edit(f: h5py.File) -> None:
            h5md = f.create_group("h5md")
            h5md.attrs["version"] = np.array(H5MD_VERSION, dtype=np.int32)
            # H5MD asks for fixed-length strings in its metadata.
            h5md.create_group("author").attrs["name"] = np.bytes_(author or _login())
            creator = h5md.create_group("creator")
            creator.attrs["name"] = np.bytes_("mfld")
            prov = provenance()
            creator.attrs["version"] = np.bytes_(prov["mfld"])
            creator.attrs["git_revision"] = np.bytes_(prov["git_revision"])
            params = f.create_group("parameters")
            params.attrs["config"] = config_text
            params.attrs["mfld_kind"] = kind
            params.attrs["checksum"] = bool(checksum)
            for key, value in prov.items():  # how this file was made
                params.require_group("provenance").attrs[key] = value
            g = params.create_group("data")
            for name, arr in data.items():
                if arr is not None:
                    g.create_dataset(name, data=np.asarray(arr), fletcher32=bool(checksum))
            counter(params, "committed", (0, 0))
            f.create_group("observables")
            if kind == "particles":
                box = f.create_group(f"{_PARTICLES}/box")
                box.attrs["dimension"] = np.int32(dim)
                box.attrs["boundary"] = np.array(["none"] * dim, dtype="S4")
            else:
                assert grid is not None  # a density file is created with its grid
                fields = f.create_group(_FIELDS)
                fields.attrs["lower"] = np.asarray(grid.lower, dtype=np.float64)
                fields.attrs["upper"] = np.asarray(grid.upper, dtype=np.float64)
                fields.attrs["cells"] = np.asarray(grid.cells, dtype=np.int64)

        store = cls.__new__(cls)
        store.path, store._want, store._pending = path, (frames, records), []
        store._new = (edit, sum(np.asarray(a).nbytes for a in data.values() if a is not None) + len(config_text))
        return store

    def write_metadata(self) -> None:
        """Write a new store's file now, without frames (a sharded run's master, which the shards name)."""
        if self._new is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            replace(self.path, self._new[0], size=self._new[1])
            self._new = None

    def add_observables(self, step: int, time: float, values: dict[str, float]) -> None:
        """Buffer one record of observables; it reaches the file at the next commit."""
        self._pending.append((step, time, dict(values)))

    def pending(self) -> bool:
        return bool(self._pending)

    def has_frames(self) -> bool:
        if self._new is not None:
            return False
        with h5py.File(self.path, "r") as f:
            return _counts(f)[0] > 0

    def commit_observables(self) -> None:
        """Write the buffered observables without a new frame."""
        self._commit({}, 0, 0.0)

    def finish(self) -> None:
        """At the end of a run (finished or stopped): drop the rows past the count, which only mfld's readers
        know to skip (H5MD wants steps that increase; h5py, xarray and pyh5md showed step -1 and NaN times).

        One whole-file copy, made only when padding is left (a run that stopped before its plan); a
        resume gives the file room again at its first commit. If the disk cannot hold the copy, the
        padding stays (readers that read ``/parameters/committed`` are unaffected) and a warning says so.
        """
        if self._new is not None:
            return
        with h5py.File(self.path, "r") as f:
            k, r = _counts(f)
            frames = [f[p]["value"].shape[0] for p in _FRAME_ELEMENTS if p in f]
            records = [o["value"].shape[0] for o in f["observables"].values()]
        if all(n == k for n in frames) and all(n == r for n in records):
            return

        def edit(new: h5py.File) -> None:
            with h5py.File(self.path, "r") as old:
                _copy_metadata(old, new)
                _lay_out(old, new, {}, set(), (k, r), (k, r), trim=True)

        try:
            replace(self.path, edit, size=self.path.stat().st_size)
        except CheckpointError as e:
            warnings.warn(f"{e}; the rows past /{_COUNT} stay in the file (mfld's readers skip them)", stacklevel=2)

    def commit(self, state: State) -> None:
        """Append a frame of ``state`` (particles or a density) and all buffered observables, crash-safely."""
        self._commit(_frame(state), state.step, state.time)

    def _commit(self, frame: Frame, step: int, time: float) -> None:
        records = self._pending

        def write(f: h5py.File) -> tuple[int, int]:
            return _write_rows(f, frame, step, time, records)

        if self._new is None:
            with h5py.File(self.path, "r") as f:
                fits = _fits(f, frame, records)
                k, r = _counts(f)
        else:
            fits, (k, r) = False, (0, 0)
        if fits:
            commit_rows(self.path, write, _COUNT)
        else:
            need = (k + bool(frame), r + len(records))
            names = {name for _, _, values in records for name in values}
            new_file = self._new

            def edit(new: h5py.File) -> None:
                if new_file is not None:
                    new_file[0](new)
                    _lay_out(None, new, frame, names, need, self._want)
                else:
                    with h5py.File(self.path, "r") as old:
                        _copy_metadata(old, new)
                        _lay_out(old, new, frame, names, need, self._want)
                new[_COUNT][:2] = write(new)

            rows_ = (max(self._want[0], need[0]), max(self._want[1], need[1]))
            before = new_file[1] if new_file is not None else self.path.stat().st_size
            size = sum(v.nbytes for v in frame.values()) * rows_[0] + 24 * rows_[1] + before
            self.path.parent.mkdir(parents=True, exist_ok=True)
            replace(self.path, edit, size=size)
            self._new = None
        self._pending = []

def _write_observables(f: h5py.File, pending: list[Record]) -> None:
    """Append records to a sharded run's master (rewritten whole at each commit, so its series grow)."""
    obs = f["observables"]
    for step, time, values in pending:
        for name, v in values.items():
            if name not in obs:
                _element(obs, name, (), np.float64)
            _append(obs[name], step, time, v)


def _density_element(fields: h5py.Group, name: str, capacity: int, shape: tuple[int, ...],
                     dtype: npt.DTypeLike) -> h5py.Group:
    """A density element whose dimensions are self-described: time and the cell centres w_k, in its own group."""
    el = _slot_element(fields, name, capacity, shape, dtype)
    el["time"].make_scale("time")
    el["time"].attrs["units"] = el["time"].attrs["unit"] = "1"
    el["time"].attrs["long_name"] = "time t of the dynamics (dimensionless)"
    el["value"].dims[0].attach_scale(el["time"])
    el["step"].dims[0].attach_scale(el["time"])
    el["value"].attrs["long_name"] = f"density of {name} on the grid"
    el["value"].attrs["units"] = el["value"].attrs["unit"] = "1"
    a = fields.attrs
    grid = Grid(tuple(a["lower"].tolist()), tuple(a["upper"].tolist()), tuple(int(c) for c in a["cells"]))
    for k, axis in enumerate(grid.axes()):
        w = el.create_dataset(f"w_{k}", data=axis)
        w.make_scale(f"w_{k}")
        w.attrs["units"] = w.attrs["unit"] = "1"
        w.attrs["long_name"] = f"cell centres of parameter axis {k}"
        el["value"].dims[k + 1].attach_scale(w)
    return el


_DATA_NAMES = ("X", "Y", "X_test", "Y_test", "relevant")


def _layout_problems(f: h5py.File, config: Config, data: dict[str, np.ndarray], density: bool) -> list[str]:
    """What in the file disagrees with its own configuration: every stored array's shape and type is checked."""
    out = []
    X, Y = data.get("X"), data.get("Y")
    if X is None or Y is None or X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        out.append(f"/parameters/data must hold X (n x d) and Y (n x T) with as many rows, got "
                   f"{getattr(X, 'shape', None)} and {getattr(Y, 'shape', None)}")
    for name, arr in data.items():
        if not np.issubdtype(arr.dtype, np.floating):
            out.append(f"/parameters/data/{name} has dtype {arr.dtype}, not floating point")
    count = f.get(_COUNT)
    if count is not None and (not isinstance(count, h5py.Dataset) or counts(count, 2) is None):
        return [*out, f"/{_COUNT} is not mfld's commit counter (int64[{4096 // 8}])"]
    frames, records = _counts(f)
    if frames < 0 or records < 0:
        out.append(f"/{_COUNT} holds negative counts {frames, records}")
    el = _frame_element(f)
    if el is not None:
        rows_ = el["step"].shape[0]
        if el["time"].shape != (rows_,) or el["value"].shape[0] != rows_ or frames > rows_:
            out.append(f"{el.name}: step, time and value hold {rows_}, {el['time'].shape[0]} and "
                       f"{el['value'].shape[0]} rows, and /{_COUNT} counts {frames} frames")
        value = el["value"]
        if density:
            cells = tuple(int(c) for c in f[_FIELDS].attrs["cells"])
            if value.shape[1:] != cells:
                out.append(f"{value.name} has frames of shape {value.shape[1:]}, the grid has {cells} cells")
            prev = f.get(f"{_FIELDS}/mu_previous/value")
            if prev is not None and prev.shape != value.shape:
                out.append(f"{prev.name} has shape {prev.shape}, unlike {value.name} {value.shape}")
        else:
            N = config["particles"]["N"]
            dim = int(f[f"{_PARTICLES}/box"].attrs["dimension"])
            if value.ndim != 3 or value.shape[1:] != (N, dim):
                out.append(f"{value.name} has shape {value.shape}, the configuration says N = {N} particles "
                           f"in dimension {dim}")
            rng = f.get(f"{_PARTICLES}/rng_state/value")
            if rng is None or rng.shape[0] < frames:
                out.append(f"{_PARTICLES}/rng_state must hold one noise state per frame")
        if not np.issubdtype(value.dtype, np.floating):
            out.append(f"{value.name} has dtype {value.dtype}, not floating point")
    elif frames:
        out.append(f"/{_COUNT} counts {frames} frames in a file that has none")
    for name, obs in f["observables"].items():
        if not isinstance(obs, h5py.Group) or any(k not in obs for k in ("step", "time", "value")):
            out.append(f"/observables/{name} is not a {{step, time, value}} element")
        elif not obs["step"].shape == obs["time"].shape == obs["value"].shape or obs["step"].shape[0] < records:
            out.append(f"/observables/{name}: step, time and value differ in length or hold fewer than "
                       f"{records} records")
    return out


def _refuse_beyond_memory(path: Path, what: str, nbytes: int) -> None:
    """A file may declare any size (and a compressed one expand a small chunk to it): refuse, before reading,
    what could not fit in half of the memory available."""
    if nbytes > available_memory() // 2:
        raise CheckpointError(f"{str(path)!r}: {what} ({nbytes / 2**30:.3g} GiB), more than half of the memory "
                              "available: mfld does not read it")


def _read_bounded(path: Path, dataset: object) -> np.ndarray:
    """A stored array read whole, once its declared size is known to fit in memory."""
    if not isinstance(dataset, h5py.Dataset):
        raise CheckpointError(f"{str(path)!r}: {getattr(dataset, 'name', dataset)} is not a dataset")
    _refuse_beyond_memory(path, f"{dataset.name} declares {dataset.shape} {dataset.dtype}",
                          dataset.size * dataset.dtype.itemsize)
    return dataset[()]


def _bounded_frame(path: Path, value: h5py.Dataset) -> None:
    """Refuse to read a frame of ``value`` whose declared size could not fit in memory."""
    _refuse_beyond_memory(path, f"{value.name} declares frames of {value.shape[1:]} {value.dtype}",
                          math.prod(value.shape[1:]) * value.dtype.itemsize)


def _kind_problems(kind: str, config: Config, density: bool) -> list[str]:
    """Whether the file's declared kind of run agrees with its content and its configuration."""
    if (kind == "particles") == density:
        return [f"/parameters mfld_kind = {kind!r}, but the file holds {'a density' if density else 'particles'}"]
    made = config["discretization"]
    if kind != made and not (kind == "stationary" and made != "particles"):
        return [f"/parameters mfld_kind = {kind!r} disagrees with its configuration's discretization = {made!r}"]
    return []


def _clock_problems(f: h5py.File, kind: str, every: int) -> list[str]:
    """Counted rows must hold written steps: step >= 0 and never decreasing, time finite (padding rows, written
    at creation as step -1 and time NaN, must lie past the count), and a count of no frames must not hide
    frames (a commit writes one uncounted frame row at most before its count).

    Frames and records are committed together: a commit of the frame at step F holds every record up to F,
    and records come every ``every`` steps (``output.metrics_every``), so the last counted record lies in
    ``[every floor(F / every), F]``. Counts outside that were not written together, and a resume from F would
    leave a gap (or repeat records) in every observable."""
    frames, records = _counts(f)
    el = _frame_element(f)
    obs = [o for o in f["observables"].values() if isinstance(o, h5py.Group)]
    # What reading the counted steps, times and values would take.
    _refuse_beyond_memory(Path(f.filename), f"/{_COUNT} counts {frames} frames and {records} records of "
                          f"{len(obs)} observables", 8 * (2 * frames + (2 + len(obs)) * records))
    out = []
    for what, group, count in (("frame", el, frames), ("record", obs[0] if obs else None, records)):
        if group is None or not count:
            continue
        steps, times = group["step"][:count], group["time"][:count]
        if steps.min() < 0 or np.any(np.diff(steps) < 0) or not np.isfinite(times).all():
            out.append(f"/{_COUNT} counts {count} {what}s, but {group.name} holds rows that were never written "
                       f"(step -1 or time NaN) or out of order among them: the counter or the file is damaged")
    # A stationary file's records are iterations; a file of 0.2.0.dev0 killed in its first interval has frame 0
    # and no record (the record of step 0 was not committed with the frame then): it resumes without it.
    if not out and el is not None and frames and kind != "stationary":
        last = int(el["step"][frames - 1])
        got = int(obs[0]["step"][records - 1]) if obs and records else None
        if (got is None and last > 0) or (got is not None and not every * (last // every) <= got <= last):
            out.append(f"/{_COUNT} counts frames to step {last} but records to "
                       f"{'none' if got is None else f'step {got}'}: frames and records were not committed together "
                       f"(a record at step {every * (last // every)} is expected); the counter is damaged")
    if el is not None and frames == 0:
        written = int(np.count_nonzero(el["step"][: min(el["step"].shape[0], 4096)] >= 0))
        if written > 1:
            out.append(f"/{_COUNT} counts no frame, but {el.name} holds {written} saved steps: the counter is "
                       "damaged (the frames are there: do not start the run again with --overwrite)")
    return out


def _frame_element(f: h5py.File) -> h5py.Group | None:
    """The element whose frames define the saved steps: particle positions or the density."""
    return f.get(f"{_PARTICLES}/position") or f.get(f"{_FIELDS}/mu")


_SHARD = re.compile(r"^(?P<stem>.+)\.r\d+of\d+\.h5$")


def _foreign_parts(path: Path, f: h5py.File) -> list[str]:
    """Everything in the file that reaches outside it: external links, external storage, virtual datasets.

    The one exception is mfld's own sharded layout: the master's particle positions as a virtual
    dataset over ``<stem>.r<k>of<R>.h5`` files in the master's folder.
    """
    found: list[str] = []

    def visit(name: str, link: h5py.HardLink | h5py.SoftLink | h5py.ExternalLink) -> None:
        if isinstance(link, h5py.ExternalLink):
            found.append(f"/{name} is an external link to {link.filename}:{link.path}")
            return
        if isinstance(link, h5py.SoftLink):
            found.append(f"/{name} is a soft link to {link.path}")
            return
        obj = f.get(name)
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.external:
            found.append(f"/{name} keeps its data in external files {[e[0] for e in obj.external]}")
        if obj.is_virtual:
            own = f"/{name}" == f"{_PARTICLES}/position/value"
            for vs in obj.virtual_sources():
                m = _SHARD.match(vs.file_name)
                if not (own and m and m["stem"] == path.stem and "/" not in vs.file_name):
                    found.append(f"/{name} is a virtual dataset over {vs.file_name}:{vs.dset_name}")

    _walk_links(f, "", visit, set())
    return found


def _walk_links(group: h5py.Group, prefix: str, visit: Callable[[str, object], None], seen: set[int]) -> None:
    """Visit every link below ``group`` once, without following soft or external links (hard-link cycles too).

    Iterative, so that a file nested deeper than Python's recursion limit is read like any other.
    """
    todo = [(group, prefix)]
    seen.add(hash(group.id))
    while todo:
        node, path = todo.pop()
        for key in node:
            link = node.get(key, getlink=True)
            name = f"{path}{key}"
            visit(name, link)
            if isinstance(link, h5py.HardLink):
                obj = node.get(key)
                if isinstance(obj, h5py.Group) and hash(obj.id) not in seen:
                    seen.add(hash(obj.id))
                    todo.append((obj, name + "/"))


def check_file(path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is an mfld H5MD checkpoint that stays inside itself.

    A file from elsewhere is untrusted input: links, external storage and virtual datasets that
    reach other files are refused (except mfld's own shard layout), so reading it reads nothing else.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a regular file")
    if not h5py.is_hdf5(path):
        raise CheckpointError(f"{str(path)!r} is not an HDF5 file (truncated, corrupt, or another format)")
    try:
        with h5py.File(path, "r") as f:
            if "h5md" not in f or "version" not in f["h5md"].attrs:
                raise CheckpointError(f"{str(path)!r} is HDF5 but not an H5MD file (no /h5md group with a version)")
            if "parameters" not in f or "config" not in f["parameters"].attrs:
                raise CheckpointError(
                    f"{str(path)!r} is H5MD but was not written by mfld (no configuration in /parameters)"
                )
            foreign = _foreign_parts(path, f)
            if foreign:
                raise CheckpointError(f"{str(path)!r} reaches outside itself, which mfld does not read: {foreign[0]}"
                                      + (f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""))
    except OSError as e:
        raise CheckpointError(f"{str(path)!r} cannot be read as HDF5: {e}") from None


class CheckpointReader:
    """Read-only view of a checkpoint: saved steps, observables and measures."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        check_file(self.path)
        try:
            with h5py.File(self.path, "r") as f:
                self._read(f)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, OSError) as e:  # a part missing or of the wrong kind
            raise CheckpointError(f"{str(self.path)!r} is a malformed mfld checkpoint: {type(e).__name__}: {e}"
                                  ) from None

    def _read(self, f: h5py.File) -> None:
        self.config_text = str(f["parameters"].attrs["config"])
        prov = f["parameters"].get("provenance")
        self.provenance = {k: str(v) for k, v in prov.attrs.items()} if prov is not None else {}
        try:
            self.config = from_toml(self.config_text, written_by=self.provenance.get("mfld", FIRST_VERSION))
        except ValueError as e:
            raise CheckpointError(f"{str(self.path)!r} holds an invalid configuration: {e}") from None
        self.kind = str(f["parameters"].attrs["mfld_kind"])
        if self.kind not in ("particles", "grid", "spectral", "stationary"):
            raise CheckpointError(f"{str(self.path)!r} names an unknown kind of run {self.kind!r}")
        self.data = {k: _read_bounded(self.path, v) for k, v in f["parameters/data"].items() if k in _DATA_NAMES}
        self.has_density = _FIELDS in f
        missing = _missing_shards(self.path, f)
        if missing:
            raise CheckpointError(
                f"{str(self.path)!r} is the master of a sharded run whose shard files are missing: "
                f"{', '.join(missing)}; keep them in the same folder as the master (move them together)"
            )
        problems = _kind_problems(self.kind, self.config, self.has_density)
        problems = problems or _layout_problems(f, self.config, self.data, self.has_density)
        problems = problems or _clock_problems(f, self.kind, self.config["output"]["metrics_every"])
        if not problems:
            self.frames, self.records = _counts(f)
            el = _frame_element(f)
            self.capacity = el["step"].shape[0] if el is not None else 0  # rows reserved (a run that stopped early)
            self.steps = el["step"][: self.frames] if el is not None else np.zeros(0, dtype=np.int64)
            self.times = el["time"][: self.frames] if el is not None else np.zeros(0)
        if problems:
            raise CheckpointError(f"{str(self.path)!r} is a malformed mfld checkpoint: {problems[0]}"
                                  + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))

    @contextlib.contextmanager
    def _open(self) -> Iterator[h5py.File]:
        """The file for reading; a chunk whose checksum fails, or that cannot be read, is one clear error."""
        try:
            with h5py.File(self.path, "r") as f:
                yield f
        except OSError as e:
            raise CheckpointError(f"{str(self.path)!r}: stored data cannot be read (a failed checksum: the file "
                                  f"was damaged after it was written, or a truncated file): {e}") from None

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
            raise CheckpointError(f"{str(self.path)!r} holds no saved frame: its run stopped before the first one; "
                                  "start it again with `mfld run ... --overwrite`")
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
        with self._open() as f:
            if _FIELDS not in f:
                value = f[f"{_PARTICLES}/position/value"]
                _bounded_frame(self.path, value)
                W = value[k, rows]
                rng = f[f"{_PARTICLES}/rng_state/value"][k]
                rng_state = rng.decode() if isinstance(rng, bytes) else str(rng)
                q = np.full(W.shape[0], 1.0 / value.shape[1])
                return Snapshot(self.path, self.config, self.data, self.kind, step_k, time_k, W, q, rng_state)
            density = f[f"{_FIELDS}/mu/value"]
            _bounded_frame(self.path, density)
            density = density[k]
            previous = f[f"{_FIELDS}/mu_previous/value"][k] if f"{_FIELDS}/mu_previous" in f else None
        if previous is not None and np.isnan(previous).all():
            previous = None
        grid = self.grid()
        q = density.ravel() * grid.cell_volume
        return Snapshot(
            self.path, self.config, self.data, self.kind, step_k, time_k, grid.centers(), q, None, density, grid,
            previous,
        )

    def grid(self) -> Grid:
        """The :class:`~mfld.discretizations.grid.Grid` of a density file."""
        with self._open() as f:
            if _FIELDS not in f:
                raise CheckpointError(f"{str(self.path)!r} holds particles, not a density on a grid")
            a = f[_FIELDS].attrs
            return Grid(tuple(a["lower"].tolist()), tuple(a["upper"].tolist()), tuple(int(c) for c in a["cells"]))

    def to_xarray(self) -> Any:  # an xarray.DataArray (xarray is optional)
        """All saved densities as an ``xarray.DataArray`` with dims ``(time, w_0, ..., w_{p-1})``."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError("to_xarray needs xarray: `pip install xarray`") from None
        grid = self.grid()
        with self._open() as f:
            value = f[f"{_FIELDS}/mu/value"][: self.frames]
        dims = ["time"] + [f"w_{k}" for k in range(grid.dim)]
        coords = {"time": self.times, "step": ("time", self.steps)}
        coords.update({f"w_{k}": axis for k, axis in enumerate(grid.axes())})
        return xr.DataArray(value, dims=dims, coords=coords, name="mu", attrs={"config": self.config_text})


def load(path: str | Path, step: int | None = None) -> Snapshot:
    """The measure saved at ``step`` (default: the last) in checkpoint ``path``, as host arrays with its config."""
    return CheckpointReader(path).snapshot(step)


class ShardedCheckpointStore(CheckpointStore):
    """The checkpoint of a particle run split over MPI processes (see the module doc).

    Every rank calls :meth:`commit`; each commits its frame into its shard in place, then rank 0
    rewrites the master (observables, noise states, the virtual dataset over the shards; no
    positions) and replaces it. A process killed between the two leaves the master describing
    only the frames it had before; the shard row it wrote is reused.
    """

    def __init__(self, path: str | Path, comm: Communicator, start: int, stop: int, total: int,
                 frames: int = 0) -> None:
        self.comm, self.start, self.stop, self.total = comm, start, stop, total
        self.path = Path(path)
        self.shard = self.path.with_name(f"{self.path.stem}.r{comm.rank}of{comm.size}{self.path.suffix}")
        self._shard_want = self._shard_rows()[0] + frames
        self._pending = []
        self._new = None
        if comm.rank == 0:
            check_file(self.path)

    def has_frames(self) -> bool:
        return bool(self.comm.bcast(super().has_frames() if self.comm.rank == 0 else None))

    def finish(self) -> None:
        """The master holds no padding (it is rewritten whole); the shards keep theirs, behind their counts."""

    def _rewrite_master(self, edit: Callable[[h5py.File], None]) -> None:
        pending = self._pending

        def whole(f: h5py.File) -> None:
            edit(f)
            _write_observables(f, pending)
            el, obs = f.get(f"{_PARTICLES}/position"), list(f["observables"].values())
            f[_COUNT][:2] = (el["step"].shape[0] if el else 0, obs[0]["step"].shape[0] if obs else 0)

        replace(self.path, whole, size=64 * len(pending), copy=True)

    def commit_observables(self) -> None:
        if self.comm.rank == 0:  # the observables live in the master, which rank 0 writes
            self._rewrite_master(lambda f: None)
        self._pending = []
        self.comm.barrier()

    def _shard_rows(self) -> tuple[int, int, tuple[int, ...] | None]:
        """This process's shard: committed rows, rows it has room for (0 without a counter), row shape."""
        if not self.shard.exists():
            return 0, 0, None
        with h5py.File(self.shard, "r") as f:
            c = counts(f["committed"], 1) if isinstance(f.get("committed"), h5py.Dataset) else None
            rows_ = f["value"].shape[0]
            return (c[0] if c is not None else rows_), (rows_ if c is not None else 0), f["value"].shape[1:]

    def _commit_shard(self, W: np.ndarray) -> int:
        """Commit ``W`` as the next row of this process's shard; the row's index."""
        k, room, shape = self._shard_rows()
        fits = room > k and shape == W.shape

        def write(f: h5py.File) -> tuple[int]:
            f["value"][k] = W
            return (k + 1,)

        if fits:
            commit_rows(self.shard, write, "committed")
            return k
        old = self.shard.exists()
        cap = _capacity(self._shard_want, k + 1, room)

        def edit(new: h5py.File) -> None:
            rows(new, "value", cap, W.shape, W.dtype)
            new.attrs["start"], new.attrs["stop"] = self.start, self.stop
            counter(new, "committed", (k,))
            if old:
                with h5py.File(self.shard, "r") as f:
                    for i in range(k):
                        new["value"][i] = f["value"][i]
            new["committed"][:1] = write(new)

        replace(self.shard, edit, size=cap * W.nbytes)
        return k

    def commit(self, state: State) -> None:
        if not isinstance(state, ParticleState):
            raise TypeError(f"a sharded checkpoint holds particles, not {type(state).__name__}")
        W = np.asarray(state.positions)
        local_index = self._commit_shard(W)
        sources = self.comm.allgather([self.shard.name, local_index, self.start, self.stop])
        if self.comm.rank == 0:

            def edit(f: h5py.File) -> None:
                group = f[_PARTICLES]
                if "position" not in group:
                    el = group.create_group("position")
                    for name, dtype in (("step", np.int64), ("time", np.float64)):
                        el.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(256,))
                    el.create_dataset("sources", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(256,))
                    _element(group, "rng_state", (), _STR)
                el = group["position"]
                k = el["step"].shape[0]
                for name in ("step", "time", "sources"):
                    el[name].resize(k + 1, axis=0)
                el["step"][k], el["time"][k] = state.step, state.time
                el["sources"][k] = json.dumps(sources)
                _append(group["rng_state"], state.step, state.time, state.rng_state)
                _rebuild_virtual(el, self.total, W.shape[1], W.dtype)

            self._rewrite_master(edit)
        self._pending = []
        self.comm.barrier()


def _missing_shards(path: Path, f: h5py.File) -> list[str]:
    """The shard files that the master's table of sources names and its folder lacks."""
    sources = f.get(f"{_PARTICLES}/position/sources")
    if sources is None:
        return []
    names = {entry[0] for t in sources[()] for entry in json.loads(t)}
    return sorted(n for n in names if not (path.parent / n).is_file())


def is_sharded(path: str | Path) -> bool:
    """Whether the file's particle positions are a virtual dataset over shard files."""
    with h5py.File(path, "r") as f:
        return f"{_PARTICLES}/position/sources" in f


def _rebuild_virtual(el: h5py.Group, total: int, p: int, dtype: npt.DTypeLike) -> None:
    """``value`` as a virtual dataset (frames x total x p) over the shard files listed in ``sources``.

    Shards are named relative to the master, which HDF5 resolves against the master's folder.
    """
    table = [json.loads(t) for t in el["sources"][()]]
    layout = h5py.VirtualLayout(shape=(len(table), total, p), dtype=dtype)
    for k, frame in enumerate(table):
        for name, index, start, stop in frame:
            layout[k, start:stop] = h5py.VirtualSource(name, "value", shape=(index + 1, stop - start, p))[index]
    if "value" in el:
        del el["value"]
    el.create_virtual_dataset("value", layout, fillvalue=np.nan)
