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

Every write (creation and each commit) goes to a copy of the file that then
atomically replaces it (``os.replace`` after ``fsync``): a process killed
mid-write leaves the previous file intact. The price is one file copy per
commit, cheap next to the steps between checkpoints at sensible intervals.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from mfld.discretizations.grid import FieldState, Grid
from mfld.discretizations.particles import ParticleState
from mfld.model.distributed import Communicator

from .config import Config, from_toml
from .provenance import provenance

H5MD_VERSION = (1, 1)
_PARTICLES = "/particles/mu"
_FIELDS = "/fields"
_STR = h5py.string_dtype()


class CheckpointError(ValueError):
    """A file is missing, not HDF5, not H5MD, not written by mfld, or inconsistent."""


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment
        return "unknown"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_MARGIN = 1 << 20  # HDF5's own metadata and chunk rounding, generously


def _check_room(path: Path, size: int) -> None:
    """Refuse, before HDF5 writes a byte, a write of ``size`` bytes that the disk or the file-size limit cannot hold.

    HDF5 does not recover from a write that fails half-way (the process can crash at exit), so the
    room is checked first; the ``OSError`` handler below is for what the check cannot foresee.
    """
    import resource

    free = shutil.disk_usage(path.parent).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if size > free:
        raise CheckpointError(f"no room to write {str(path)!r}: it needs about {size / 2**20:.1f} MiB, the disk has "
                              f"{free / 2**20:.1f} MiB free; the file keeps the frames saved before")
    if limit != resource.RLIM_INFINITY and size > limit:
        raise CheckpointError(f"no room to write {str(path)!r}: it needs about {size / 2**20:.1f} MiB, above the "
                              f"file-size limit of {limit / 2**20:.1f} MiB (ulimit -f); the file keeps the frames "
                              "saved before")


def _atomic_write(path: Path, edit: Callable[[h5py.File], None], start_from_existing: bool,
                  adds: int = 0) -> None:
    """Apply ``edit`` to a copy of the file and replace the file by it: all of the edit or none of it.

    ``adds`` is about how many bytes the edit writes. A write that cannot fit (a full disk, a
    file-size limit) or fails (a read-only folder) leaves the file as it was, removes the copy and
    raises :class:`CheckpointError` with the reason.
    """
    tmp = path.with_name(path.name + ".partial")
    _check_room(path, (path.stat().st_size if start_from_existing else 0) + adds + _MARGIN)
    try:
        if start_from_existing:
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a" if start_from_existing else "w") as f:
            edit(f)
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        reason = os.strerror(e.errno) if e.errno else str(e).splitlines()[0]
        kept = "the file keeps the frames saved before" if path.exists() else "no file was written"
        raise CheckpointError(f"writing {str(path)!r} failed ({reason}); {kept}") from None
    try:
        _fsync(path.parent)
    except OSError:  # pragma: no cover - directories cannot be fsynced everywhere
        pass


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

    path: Path
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


class CheckpointStore:
    """Writer of one run's checkpoint file; observables are buffered until ``commit``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        check_file(self.path)
        self._pending: list[tuple[int, float, dict[str, float]]] = []

    @classmethod
    def create(
        cls, path: str | Path, config_text: str, data: dict[str, np.ndarray], kind: str, dim: int,
        grid: Grid | None = None, author: str = "", checksum: bool = False,
    ) -> CheckpointStore:
        """Write a new file with metadata, configuration and data, and no frames yet.

        ``grid`` (for densities) provides ``lower``, ``upper``, ``cells`` and ``axes()``;
        ``author`` defaults to the login name.
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
            f.create_group("observables")
            if kind == "particles":
                box = f.create_group(f"{_PARTICLES}/box")
                box.attrs["dimension"] = np.int32(dim)
                box.attrs["boundary"] = np.array(["none"] * dim, dtype="S4")
            else:
                fields = f.create_group(_FIELDS)
                fields.attrs["lower"] = np.asarray(grid.lower, dtype=np.float64)
                fields.attrs["upper"] = np.asarray(grid.upper, dtype=np.float64)
                fields.attrs["cells"] = np.asarray(grid.cells, dtype=np.int64)

        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, edit, start_from_existing=False,
                      adds=sum(np.asarray(a).nbytes for a in data.values() if a is not None) + len(config_text))
        return cls(path)

    def add_observables(self, step: int, time: float, values: dict[str, float]) -> None:
        """Buffer one record of observables; it reaches the file at the next commit."""
        self._pending.append((step, time, dict(values)))

    def pending(self) -> bool:
        return bool(self._pending)

    def has_frames(self) -> bool:
        with h5py.File(self.path, "r") as f:
            return _frame_element(f) is not None and _frame_element(f)["step"].shape[0] > 0

    def commit_observables(self) -> None:
        """Write the buffered observables without a new frame, atomically."""
        pending = self._pending
        _atomic_write(self.path, lambda f: _write_observables(f, pending), start_from_existing=True)
        self._pending = []

    def commit(self, state: ParticleState | FieldState) -> None:
        """Append a frame of ``state`` (particles or a density) and all buffered observables, atomically."""
        pending = self._pending

        def edit(f: h5py.File) -> None:
            if isinstance(state, ParticleState):
                _write_particles(f, state)
            else:
                _write_density(f, state)
            _write_observables(f, pending)

        size = np.asarray(state.positions if isinstance(state, ParticleState) else state.density).nbytes
        _atomic_write(self.path, edit, start_from_existing=True, adds=2 * size + 64 * len(pending))
        self._pending = []


def _write_observables(f: h5py.File, pending: list[tuple[int, float, dict[str, float]]]) -> None:
    obs = f["observables"]
    for step, time, values in pending:
        for name, v in values.items():
            if name not in obs:
                _element(obs, name, (), np.float64)
            _append(obs[name], step, time, v)


def _write_particles(f: h5py.File, state: ParticleState) -> None:
    group = f[_PARTICLES]
    W = np.asarray(state.positions)
    if "position" not in group:
        _element(group, "position", W.shape, W.dtype)
        _element(group, "rng_state", (), _STR)
    _append(group["position"], state.step, state.time, W)
    _append(group["rng_state"], state.step, state.time, state.rng_state)


def _density_element(fields: h5py.Group, name: str, shape: tuple[int, ...], dtype: npt.DTypeLike) -> None:
    """A density element whose dimensions are self-described: time and the cell centres w_k, in its own group."""
    el = _element(fields, name, shape, dtype)
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


def _write_density(f: h5py.File, state: FieldState) -> None:
    fields = f[_FIELDS]
    m = np.asarray(state.density)
    names = ["mu"] + (["mu_previous"] if state.previous is not None else [])
    for name in names:
        if name not in fields:
            _density_element(fields, name, m.shape, m.dtype)
        _append(fields[name], state.step, state.time, m if name == "mu" else state.previous)


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
    el = _frame_element(f)
    if el is not None:
        frames = el["step"].shape[0]
        if el["time"].shape != (frames,) or el["value"].shape[0] != frames:
            out.append(f"{el.name}: step, time and value hold {frames}, {el['time'].shape[0]} and "
                       f"{el['value'].shape[0]} frames")
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
            if rng is None or rng.shape[0] != frames:
                out.append(f"{_PARTICLES}/rng_state must hold one noise state per frame")
        if not np.issubdtype(value.dtype, np.floating):
            out.append(f"{value.name} has dtype {value.dtype}, not floating point")
    for name, obs in f["observables"].items():
        if not isinstance(obs, h5py.Group) or any(k not in obs for k in ("step", "time", "value")):
            out.append(f"/observables/{name} is not a {{step, time, value}} element")
        elif not obs["step"].shape == obs["time"].shape == obs["value"].shape:
            out.append(f"/observables/{name}: step, time and value differ in length")
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
    """Visit every link below ``group`` once, without following soft or external links (hard-link cycles too)."""
    seen.add(hash(group.id))
    for key in group:
        link = group.get(key, getlink=True)
        name = f"{prefix}{key}"
        visit(name, link)
        if isinstance(link, h5py.HardLink):
            obj = group.get(key)
            if isinstance(obj, h5py.Group) and hash(obj.id) not in seen:
                _walk_links(obj, name + "/", visit, seen)


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
        try:
            self.config = from_toml(self.config_text)
        except ValueError as e:
            raise CheckpointError(f"{str(self.path)!r} holds an invalid configuration: {e}") from None
        self.kind = str(f["parameters"].attrs["mfld_kind"])
        if self.kind not in ("particles", "grid", "spectral", "stationary"):
            raise CheckpointError(f"{str(self.path)!r} names an unknown kind of run {self.kind!r}")
        self.data = {k: v[()] for k, v in f["parameters/data"].items() if k in _DATA_NAMES}
        self.has_density = _FIELDS in f
        prov = f["parameters"].get("provenance")
        self.provenance = {k: str(v) for k, v in prov.attrs.items()} if prov is not None else {}
        missing = _missing_shards(self.path, f)
        if missing:
            raise CheckpointError(
                f"{str(self.path)!r} is the master of a sharded run whose shard files are missing: "
                f"{', '.join(missing)}; keep them in the same folder as the master (move them together)"
            )
        el = _frame_element(f)
        self.steps = el["step"][()] if el is not None else np.zeros(0, dtype=np.int64)
        self.times = el["time"][()] if el is not None else np.zeros(0)
        problems = _layout_problems(f, self.config, self.data, self.has_density)
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
                name: {k: el[k][()] for k in ("step", "time", "value")}
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
                W = value[k, rows]
                rng = f[f"{_PARTICLES}/rng_state/value"][k]
                rng_state = rng.decode() if isinstance(rng, bytes) else str(rng)
                q = np.full(W.shape[0], 1.0 / value.shape[1])
                return Snapshot(self.path, self.config, self.data, self.kind, step_k, time_k, W, q, rng_state)
            density = f[f"{_FIELDS}/mu/value"][k]
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
            value = f[f"{_FIELDS}/mu/value"][()]
        dims = ["time"] + [f"w_{k}" for k in range(grid.dim)]
        coords = {"time": self.times, "step": ("time", self.steps)}
        coords.update({f"w_{k}": axis for k, axis in enumerate(grid.axes())})
        return xr.DataArray(value, dims=dims, coords=coords, name="mu", attrs={"config": self.config_text})


def load(path: str | Path, step: int | None = None) -> Snapshot:
    """The measure saved at ``step`` (default: the last) in checkpoint ``path``, as host arrays with its config."""
    return CheckpointReader(path).snapshot(step)


class ShardedCheckpointStore(CheckpointStore):
    """The checkpoint of a particle run split over MPI processes (see the module doc).

    Every rank calls :meth:`commit`; each writes its shard, then rank 0 rebuilds the
    master's virtual dataset from the table of sources. A process killed between
    the two leaves the master describing only the frames it had before.
    """

    def __init__(self, path: str | Path, comm: Communicator, start: int, stop: int, total: int) -> None:
        self.comm, self.start, self.stop, self.total = comm, start, stop, total
        self.path = Path(path)
        self.shard = self.path.with_name(f"{self.path.stem}.r{comm.rank}of{comm.size}{self.path.suffix}")
        self._pending = []
        if comm.rank == 0:
            check_file(self.path)

    def has_frames(self) -> bool:
        return bool(self.comm.bcast(super().has_frames() if self.comm.rank == 0 else None))

    def commit_observables(self) -> None:
        if self.comm.rank == 0:  # the observables live in the master, which rank 0 writes
            super().commit_observables()
        self._pending = []
        self.comm.barrier()

    def commit(self, state: ParticleState | FieldState) -> None:
        W = np.asarray(state.positions)
        exists = self.shard.exists()

        def write_shard(f: h5py.File) -> None:
            if "value" not in f:
                f.create_dataset("value", shape=(0, *W.shape), maxshape=(None, *W.shape), dtype=W.dtype,
                                 chunks=(1, *W.shape))
                f.attrs["start"], f.attrs["stop"] = self.start, self.stop
            f["value"].resize(f["value"].shape[0] + 1, axis=0)
            f["value"][-1] = W

        _atomic_write(self.shard, write_shard, start_from_existing=exists, adds=W.nbytes)
        with h5py.File(self.shard, "r") as f:
            local_index = f["value"].shape[0] - 1
        sources = self.comm.allgather([self.shard.name, local_index, self.start, self.stop])
        if self.comm.rank == 0:
            pending = self._pending

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
                _write_observables(f, pending)

            _atomic_write(self.path, edit, start_from_existing=True)
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
