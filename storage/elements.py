"""H5MD 1.1 elements ``{step, time, value}`` of a checkpoint file: the paths, the element kinds
(preallocated slots, densities with their dimension scales) and the commit counter's reading."""

from __future__ import annotations

from collections.abc import Iterable

import h5py
import numpy as np
import numpy.typing as npt

from mfld.config import Config, from_toml
from mfld.discretizations.kinds import DISCRETIZATIONS
from mfld.discretizations.mesh import Grid
from mfld.discretizations.state import DensityState, ParticleState

from .commit import CheckpointError, counts, rows

H5MD_VERSION = (1, 1)


PARTICLES = "/particles/mu"


FIELDS = "/fields"


TEXT = h5py.string_dtype()


COUNT = "parameters/committed"  # [frames, records]: the rows that hold data


GROUPS = {"particles": PARTICLES, "fields": FIELDS}
"""Where the arrays of a state of each ``group`` live in a file."""
MAIN = (f"{PARTICLES}/position", f"{FIELDS}/mu")
"""The elements whose frames define the saved steps; a state's other arrays share their step and time."""


def shard_dataset(name: str) -> str:
    """The dataset of a sharded run's shard file that holds a process's rows of the state's array ``name``
    (positions in ``value``, as the shards of every mfld version have them)."""
    return "value" if name == "position" else name


def frame_elements(f: h5py.File) -> list[str]:
    """The paths of the file's frame elements (every element of a state's group), the main one first."""
    found = []
    for path in GROUPS.values():
        group = f.get(path)
        if isinstance(group, h5py.Group):
            found += [f"{path}/{name}" for name, el in group.items() if isinstance(el, h5py.Group) and "value" in el]
    return ordered(found)


def ordered(paths: Iterable[str]) -> list[str]:
    """Frame element paths, the main element of each group first (the others take its clock)."""
    return sorted(set(paths), key=lambda p: (p not in MAIN, p))


Record = tuple[int, float, dict[str, float]]


STATIONARY = "stationary"
"""The kind of a file that holds mu* (``mfld stationary``): a density, not a run."""


def state_type(kind: str) -> type[ParticleState] | type[DensityState]:
    """The state a file of ``kind`` holds: the registered discretisation's (a density for mu*)."""
    return DensityState if kind == STATIONARY else DISCRETIZATIONS[kind].state_type


def holds_density(kind: str) -> bool | None:
    """Whether files of ``kind`` hold a density on a grid (True) or particles (False), as the registry of
    discretisations says; None for a kind that no registered discretisation has."""
    if kind == STATIONARY:
        return True
    if kind not in DISCRETIZATIONS:
        return None
    return DISCRETIZATIONS[kind].density


def has_checksums(f: h5py.File) -> bool:
    """Whether the file's datasets carry Fletcher-32 checksums (``output.checksum``), verified on every read."""
    return bool(f["parameters"].attrs.get("checksum", False))


def slot_element(
    group: h5py.Group,
    name: str,
    capacity: int,
    row_shape: tuple[int, ...],
    dtype: npt.DTypeLike,
    checksum: bool | None = None,
    clock: h5py.Group | None = None,
) -> h5py.Group:
    """An H5MD element ``{step, time, value}`` of ``capacity`` preallocated rows (step -1, time NaN until written).

    With ``clock`` (an element sampled at the same steps), ``step`` and ``time`` are hard links to its
    own, as H5MD allows: fewer series for a commit to touch.
    """
    if checksum is None:
        checksum = has_checksums(group.file)
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


def components(config: Config, p: int) -> list[str]:
    """Names of a measure's ``p`` coordinates: ``u_1 .. u_d`` (and ``b`` for a feature map with bias), after
    ``a_1 .. a_T`` for the classical objective's points ``theta = (a, w)``."""
    bias = str(config["model"]["feature"]).endswith("_bias")
    T = p - int(config["data"]["d"]) - bias if config["model"]["objective"] == "classical" else 0
    return [f"a_{k + 1}" for k in range(T)] + [f"u_{k + 1}" for k in range(p - T - bias)] + (["b"] if bias else [])


def file_components(f: h5py.File, p: int) -> list[str]:
    """:func:`components` of the run a file holds (its stored configuration); ``w_0 .. w_{p-1}`` where that
    configuration does not say (a file being laid out from another's metadata only)."""
    try:
        return components(from_toml(str(f["parameters"].attrs["config"])), p)
    except (KeyError, ValueError, TypeError):
        return [f"w_{k}" for k in range(p)]


def _timed(el: h5py.Group) -> None:
    """The element's ``time`` as the dimension scale of its rows (CF: units and long_name)."""
    el["time"].make_scale("time")
    el["time"].attrs["units"] = el["time"].attrs["unit"] = "1"
    el["time"].attrs["long_name"] = "time t of the dynamics (dimensionless)"
    el["value"].dims[0].attach_scale(el["time"])
    el["step"].dims[0].attach_scale(el["time"])


def density_element(
    fields: h5py.Group, name: str, capacity: int, shape: tuple[int, ...], dtype: npt.DTypeLike
) -> h5py.Group:
    """A density element whose dimensions are self-described: time and the cell centres along each coordinate,
    named as the coordinates are (``u_1``, ``b``, ...: :func:`file_components`), in its own group."""
    el = slot_element(fields, name, capacity, shape, dtype)
    _timed(el)
    el["value"].attrs["long_name"] = f"density of {name} on the grid"
    el["value"].attrs["units"] = el["value"].attrs["unit"] = "1"
    a = fields.attrs
    grid = Grid(tuple(a["lower"].tolist()), tuple(a["upper"].tolist()), tuple(int(c) for c in a["cells"]))
    for k, (axis, label) in enumerate(zip(grid.axes(), file_components(fields.file, grid.dim), strict=True)):
        w = el.create_dataset(label, data=axis)
        w.make_scale(label)
        w.attrs["units"] = w.attrs["unit"] = "1"
        w.attrs["long_name"] = f"cell centres along {label} (parameter axis {k})"
        el["value"].dims[k + 1].attach_scale(w)
    return el


def particle_element(
    group: h5py.Group, name: str, capacity: int, shape: tuple[int, ...], dtype: npt.DTypeLike
) -> h5py.Group:
    """The positions' element with named dimensions (frames x N x p): ``time``, ``particle`` (an index) and
    ``component`` (the coordinates' names, :func:`file_components`), so that netCDF readers name the axes."""
    el = slot_element(group, name, capacity, shape, dtype)
    _timed(el)
    el["value"].attrs["long_name"] = "particle positions"
    particle = el.create_dataset("particle", data=np.arange(shape[0], dtype=np.int64))
    particle.make_scale("particle")
    particle.attrs["long_name"] = "particle index"
    el["value"].dims[1].attach_scale(particle)
    names = file_components(group.file, shape[1])
    component = el.create_dataset("component", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
    component.make_scale("component")
    component.attrs["long_name"] = "coordinate of the parameter theta = (a, w) or w = (u, b)"
    el["value"].dims[2].attach_scale(component)
    return el


def frame_element(f: h5py.File) -> h5py.Group | None:
    """The element whose frames define the saved steps: particle positions or the density."""
    return f.get(f"{PARTICLES}/position") or f.get(f"{FIELDS}/mu")


def committed_counts(f: h5py.File) -> tuple[int, int]:
    """Committed frames and observables records: the counter, or whole lengths in a file without one."""
    c = f.get(COUNT)
    if c is not None:
        found = counts(c, 2) if isinstance(c, h5py.Dataset) else None
        if found is None:
            raise CheckpointError(f"/{COUNT} is not mfld's commit counter")
        return found[0], found[1]
    el = frame_element(f)
    obs = [o for o in f["observables"].values() if isinstance(o, h5py.Group) and "step" in o]
    return (el["step"].shape[0] if el is not None else 0), (obs[0]["step"].shape[0] if obs else 0)
