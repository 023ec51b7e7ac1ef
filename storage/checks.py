"""What a checkpoint file must be before mfld reads it: an mfld H5MD file that stays inside itself, whose
stored arrays agree with its configuration and whose counted rows were written together."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np

from mfld.config import Config
from mfld.model.backend import available_memory

from .commit import CheckpointError, counts
from .elements import (
    COUNT,
    FIELDS,
    MAIN,
    PARTICLES,
    STATIONARY,
    committed_counts,
    frame_element,
    frame_elements,
    holds_density,
    shard_dataset,
    state_type,
)

DATA_NAMES = ("X", "Y", "X_test", "Y_test", "relevant")


def layout_problems(f: h5py.File, kind: str, config: Config, data: dict[str, np.ndarray], density: bool) -> list[str]:
    """What in the file disagrees with its own configuration: every stored array's shape and type is checked,
    a state's arrays against the axes its type declares (:meth:`~mfld.discretizations.state.State.dimensions`)."""
    out = []
    X, Y = data.get("X"), data.get("Y")
    if X is None or Y is None or X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        out.append(
            f"/parameters/data must hold X (n x d) and Y (n x T) with as many rows, got "
            f"{getattr(X, 'shape', None)} and {getattr(Y, 'shape', None)}"
        )
    for name, arr in data.items():
        if not np.issubdtype(arr.dtype, np.floating):
            out.append(f"/parameters/data/{name} has dtype {arr.dtype}, not floating point")
    d = config["data"]["d"]
    for name in ("X", "X_test"):
        inputs = data.get(name)
        if inputs is not None and inputs.ndim == 2 and inputs.shape[1] != d:
            out.append(f"/parameters/data/{name} has {inputs.shape[1]} columns, the configuration's data.d is {d}")
    count = f.get(COUNT)
    if count is not None and (not isinstance(count, h5py.Dataset) or counts(count, 2) is None):
        return [*out, f"/{COUNT} is not mfld's commit counter (int64[{4096 // 8}])"]
    frames, records = committed_counts(f)
    if frames < 0 or records < 0:
        out.append(f"/{COUNT} holds negative counts {frames, records}")
    el = frame_element(f)
    for series in [el, *(o for o in f["observables"].values() if isinstance(o, h5py.Group))]:
        step = series.get("step") if series is not None else None
        if isinstance(step, h5py.Dataset) and not np.issubdtype(step.dtype, np.integer):
            return [*out, f"{step.name} has dtype {step.dtype}, not integers (steps)"]
    if el is not None:
        rows_ = el["step"].shape[0]
        if el["time"].shape != (rows_,) or el["value"].shape[0] != rows_ or frames > rows_:
            out.append(
                f"{el.name}: step, time and value hold {rows_}, {el['time'].shape[0]} and "
                f"{el['value'].shape[0]} rows, and /{COUNT} counts {frames} frames"
            )
        value = el["value"]
        if density:
            cells = tuple(int(c) for c in f[FIELDS].attrs["cells"])
            if value.shape[1:] != cells:
                out.append(f"{value.name} has frames of shape {value.shape[1:]}, the grid has {cells} cells")
        else:
            N = config["particles"]["N"]
            dim = int(f[f"{PARTICLES}/box"].attrs["dimension"])
            if value.ndim != 3 or value.shape[1:] != (N, dim):
                out.append(
                    f"{value.name} has shape {value.shape}, the configuration says N = {N} particles in dimension {dim}"
                )
            rng = f.get(f"{PARTICLES}/rng_state/value")
            if rng is None or rng.shape[0] < frames:
                out.append(f"{PARTICLES}/rng_state must hold one noise state per frame")
        if not np.issubdtype(value.dtype, np.floating):
            out.append(f"{value.name} has dtype {value.dtype}, not floating point")
        out += _state_problems(f, kind, value, data, density, frames)
    elif frames:
        out.append(f"/{COUNT} counts {frames} frames in a file that has none")
    for name, obs in f["observables"].items():
        if not isinstance(obs, h5py.Group) or any(k not in obs for k in ("step", "time", "value")):
            out.append(f"/observables/{name} is not a {{step, time, value}} element")
        elif not obs["step"].shape == obs["time"].shape == obs["value"].shape or obs["step"].shape[0] < records:
            out.append(
                f"/observables/{name}: step, time and value differ in length or hold fewer than {records} records"
            )
    return out


def _state_problems(
    f: h5py.File, kind: str, main: h5py.Dataset, data: dict[str, np.ndarray], density: bool, frames: int
) -> list[str]:
    """The state's arrays beside the main one, each against the axes its state type declares: ``particle`` and
    ``component`` as the positions have them, ``cell`` the density's p axes, ``sample`` the data's rows, and
    ``column`` any length; and each with a row for every one of the ``frames`` committed frames."""
    state = state_type(kind)
    X = data.get("X")
    sizes: dict[str, list[int | None]] = {
        "cell": list(main.shape[1:]),
        "particle": list(main.shape[1:2]),
        "component": list(main.shape[2:3]),
        "sample": [X.shape[0] if X is not None else None],
        "column": [None],
    }
    group = FIELDS if density else PARTICLES
    out = []
    for path in frame_elements(f):
        if not path.startswith(f"{group}/") or path in MAIN:
            continue
        name, other = path.rsplit("/", 1)[1], f[f"{path}/value"]
        dims = state.dimensions(name)
        text = other.dtype.kind in "SO"
        if dims is None:
            out.append(f"{other.name} is not an array of a {state.__name__}")
            continue
        rows = other.shape[0] if other.ndim else 0
        if rows < frames:
            out.append(f"{other.name} holds {rows} rows, fewer than the {frames} committed frames (one row each)")
            continue
        want = [size for d in dims for size in sizes[d]]
        if text != (dims == ()) or (
            not text
            and (
                len(other.shape) != 1 + len(want)
                or any(w is not None and w != n for w, n in zip(want, other.shape[1:], strict=True))
            )
        ):
            shown = "text" if dims == () else " x ".join("?" if w is None else str(w) for w in want)
            found = "text" if text else f"shape {other.shape[1:]}"
            axes = " x ".join(dims) or "text"
            out.append(f"{other.name} has frames of {found}; a {state.__name__}'s {name}, of axes {axes}, has {shown}")
    return out


def refuse_beyond_memory(path: Path, what: str, nbytes: int) -> None:
    """A file may declare any size (and a compressed one expand a small chunk to it): refuse, before reading,
    what could not fit in half of the memory available."""
    if nbytes > available_memory() // 2:
        raise CheckpointError(
            f"{str(path)!r}: {what} ({nbytes / 2**30:.3g} GiB), more than half of the memory "
            "available: mfld does not read it"
        )


def read_bounded(path: Path, dataset: object) -> np.ndarray:
    """A stored array read whole, once its declared size is known to fit in memory."""
    if not isinstance(dataset, h5py.Dataset):
        raise CheckpointError(f"{str(path)!r}: {getattr(dataset, 'name', dataset)} is not a dataset")
    refuse_beyond_memory(
        path, f"{dataset.name} declares {dataset.shape} {dataset.dtype}", dataset.size * dataset.dtype.itemsize
    )
    return dataset[()]


def bounded_frame(path: Path, value: h5py.Dataset) -> None:
    """Refuse to read a frame of ``value`` whose declared size could not fit in memory."""
    refuse_beyond_memory(
        path,
        f"{value.name} declares frames of {value.shape[1:]} {value.dtype}",
        math.prod(value.shape[1:]) * value.dtype.itemsize,
    )


def kind_problems(kind: str, config: Config, density: bool) -> list[str]:
    """Whether the file's declared kind of run agrees with its content and its configuration."""
    if holds_density(kind) != density:
        return [f"/parameters mfld_kind = {kind!r}, but the file holds {'a density' if density else 'particles'}"]
    made = config["discretization"]
    if kind != made and not (kind == STATIONARY and holds_density(made)):
        return [f"/parameters mfld_kind = {kind!r} disagrees with its configuration's discretization = {made!r}"]
    return []


def clock_problems(f: h5py.File, kind: str, every: int) -> list[str]:
    """Counted rows must hold written steps: step >= 0 and never decreasing, time finite (padding rows, written
    at creation as step -1 and time NaN, must lie past the count), and a count of no frames must not hide
    frames (a commit writes one uncounted frame row at most before its count).

    Frames and records are committed together: a commit of the frame at step F holds every record up to F,
    and records come every ``every`` steps (``output.metrics_every``), so the last counted record lies in
    ``[every floor(F / every), F]``. Counts outside that were not written together, and a resume from F would
    leave a gap (or repeat records) in every observable."""
    frames, records = committed_counts(f)
    el = frame_element(f)
    obs = [o for o in f["observables"].values() if isinstance(o, h5py.Group)]
    # What reading the counted steps, times and values would take.
    refuse_beyond_memory(
        Path(f.filename),
        f"/{COUNT} counts {frames} frames and {records} records of {len(obs)} observables",
        8 * (2 * frames + (2 + len(obs)) * records),
    )
    out = []
    for what, group, count in (("frame", el, frames), ("record", obs[0] if obs else None, records)):
        if group is None or not count:
            continue
        steps, times = group["step"][:count], group["time"][:count]
        if steps.min() < 0 or np.any(np.diff(steps) < 0) or not np.isfinite(times).all():
            out.append(
                f"/{COUNT} counts {count} {what}s, but {group.name} holds rows that were never written "
                f"(step -1 or time NaN) or out of order among them: the counter or the file is damaged"
            )
    # A stationary file's records are iterations; a file of 0.2.0.dev0 killed in its first interval has frame 0
    # and no record (the record of step 0 was not committed with the frame then): it resumes without it.
    if not out and el is not None and frames and kind != STATIONARY:
        last = int(el["step"][frames - 1])
        got = int(obs[0]["step"][records - 1]) if obs and records else None
        if (got is None and last > 0) or (got is not None and not every * (last // every) <= got <= last):
            out.append(
                f"/{COUNT} counts frames to step {last} but records to "
                f"{'none' if got is None else f'step {got}'}: frames and records were not committed together "
                f"(a record at step {every * (last // every)} is expected); the counter is damaged"
            )
    if el is not None and frames == 0:
        written = int(np.count_nonzero(el["step"][: min(el["step"].shape[0], 4096)] >= 0))
        if written > 1:
            out.append(
                f"/{COUNT} counts no frame, but {el.name} holds {written} saved steps: the counter is "
                "damaged (the frames are there: do not start the run again with --overwrite)"
            )
    return out


SHARD_NAME = re.compile(r"^(?P<stem>.+)\.r\d+of\d+\.h5$")


def foreign_parts(path: Path, f: h5py.File) -> list[str]:
    """Everything in the file that reaches outside it: external links, external storage, virtual datasets.

    The one exception is mfld's own sharded layout: the master's arrays along the particles as virtual
    datasets ``/particles/mu/<name>/value`` over the dataset of that array (:func:`shard_dataset`) in
    ``<stem>.r<k>of<R>.h5`` files in the master's folder.
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
            prefix = f"{PARTICLES.lstrip('/')}/"
            element = name[len(prefix) : -len("/value")] if name.startswith(prefix) and name.endswith("/value") else ""
            own = bool(element) and "/" not in element
            for vs in obj.virtual_sources():
                m = SHARD_NAME.match(vs.file_name)
                if not (
                    own
                    and m
                    and m["stem"] == path.stem
                    and "/" not in vs.file_name
                    and vs.dset_name.lstrip("/") == shard_dataset(element)
                ):
                    found.append(f"/{name} is a virtual dataset over {vs.file_name}:{vs.dset_name}")

    walk_links(f, "", visit, set())
    return found


def walk_links(group: h5py.Group, prefix: str, visit: Callable[[str, object], None], seen: set[int]) -> None:
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


@contextlib.contextmanager
def checked(path: str | Path) -> Iterator[h5py.File]:
    """``path`` open for reading once it has passed :func:`check_file`'s checks: one open for the checks and
    what the caller reads next."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a regular file")
    if not h5py.is_hdf5(path):
        raise CheckpointError(f"{str(path)!r} is not an HDF5 file (truncated, corrupt, or another format)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError(f"{str(path)!r} cannot be read as HDF5: {e}") from None
    with f:
        try:
            if "h5md" not in f or "version" not in f["h5md"].attrs:
                raise CheckpointError(f"{str(path)!r} is HDF5 but not an H5MD file (no /h5md group with a version)")
            if "parameters" not in f or "config" not in f["parameters"].attrs:
                raise CheckpointError(
                    f"{str(path)!r} is H5MD but was not written by mfld (no configuration in /parameters)"
                )
            foreign = foreign_parts(path, f)
        except OSError as e:
            raise CheckpointError(f"{str(path)!r} cannot be read as HDF5: {e}") from None
        if foreign:
            raise CheckpointError(
                f"{str(path)!r} reaches outside itself, which mfld does not read: {foreign[0]}"
                + (f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else "")
            )
        yield f


def check_file(path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is an mfld H5MD checkpoint that stays inside itself.

    A file from elsewhere is untrusted input: links, external storage and virtual datasets that
    reach other files are refused (except mfld's own shard layout), so reading it reads nothing else.
    """
    with checked(path):
        pass
