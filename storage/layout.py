"""The rows of one frame and how a file's time series are laid out: what fits in place, what a commit
writes, and the copy of a file into a new layout (more rows, a new element, no padding)."""

from __future__ import annotations

import h5py
import numpy as np

from mfld.discretizations.state import DensityState, State

from .commit import counter, counts
from .elements import (
    COUNT,
    FIELDS,
    GROUPS,
    MAIN,
    PARTICLES,
    Record,
    committed_counts,
    density_element,
    frame_elements,
    has_checksums,
    ordered,
    particle_element,
    slot_element,
)

Frame = dict[str, np.ndarray | np.bytes_]
"""The rows one frame adds, by element: arrays, and the noise state as fixed-length text."""


def frame_of(state: State) -> Frame:
    """The rows one frame of ``state`` adds, by element: each of its arrays, under its group's path."""
    group = GROUPS.get(getattr(state, "group", ""))
    if group is None:
        raise TypeError(f"checkpoint files hold states of the groups {', '.join(GROUPS)}, not a {type(state).__name__}")
    return {
        f"{group}/{name}": np.bytes_(value.encode()) if isinstance(value, str) else np.asarray(value)
        for name, value in state.arrays().items()
    }


def frame_bytes(state: State) -> int:
    """Bytes one frame of ``state`` adds to a checkpoint file."""
    return sum(v.nbytes for v in frame_of(state).values())


def blank_row(value: h5py.Dataset) -> np.ndarray | bytes:
    """The row of an element that a frame does not have (mu_previous before the second step)."""
    return b"" if value.dtype.kind == "S" else np.full(value.shape[1:], np.nan, dtype=value.dtype)


def fits_in_place(f: h5py.File, frame: Frame, records: list[Record]) -> bool:
    """Whether the commit fits in rows the file already has (else its structure must change)."""
    if not isinstance(f.get(COUNT), h5py.Dataset) or counts(f[COUNT], 2) is None:
        return False
    k, r = committed_counts(f)
    for path in set(frame) | set(frame_elements(f)):
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


def write_rows(f: h5py.File, frame: Frame, step: int, time: float, records: list[Record]) -> tuple[int, int]:
    """Write the frame into row ``frames`` of every frame element, the records after the last; the new counts."""
    k, r = committed_counts(f)
    clocks: set[int] = set()  # step and time shared by several elements are written once

    def tick(el: h5py.Group, rows_: int | slice, steps: object, times: object) -> None:
        if hash(el["step"].id) not in clocks:
            clocks.add(hash(el["step"].id))
            el["step"][rows_], el["time"][rows_] = steps, times

    if frame:
        for path in frame_elements(f):
            el = f[path]
            tick(el, k, step, time)
            el["value"][k] = frame[path] if path in frame else blank_row(el["value"])
    if records:
        rows_ = slice(r, r + len(records))
        for name, el in f["observables"].items():
            tick(el, rows_, [s for s, _, _ in records], [t for _, t, _ in records])
            el["value"][rows_] = [values.get(name, np.nan) for _, _, values in records]
    return k + bool(frame), r + len(records)


def capacity(want: int, need: int, old: int) -> int:
    """Rows to give a series: the run's plan, else double what no longer fits."""
    return max(want, need, 2 * old if need > old else old)


def copy_metadata(old: h5py.File, new: h5py.File) -> None:
    """Everything of ``old`` but its time series: its attributes, H5MD metadata, parameters and data, the box or the
    grid."""
    new.attrs.update(old.attrs)
    old.copy(old["h5md"], new)
    params = new.create_group("parameters")
    params.attrs.update(old["parameters"].attrs)
    for name, obj in old["parameters"].items():
        if name != "committed":
            old.copy(obj, params)
    counter(params, "committed", committed_counts(old))
    new.create_group("observables")
    if f"{PARTICLES}/box" in old:
        old.copy(old[f"{PARTICLES}/box"], new.create_group(PARTICLES))
    if FIELDS in old:
        new.create_group(FIELDS).attrs.update(old[FIELDS].attrs)


def lay_out(
    old: h5py.File | None,
    new: h5py.File,
    frame: Frame,
    names: set[str],
    need: tuple[int, int],
    want: tuple[int, int],
    trim: bool = False,
) -> None:
    """Give ``new`` (its metadata in place) the time series of ``old`` (None: a new file) with room for ``need``
    (at least ``want``) frames and records, and elements for ``frame`` and the observables ``names``; the
    committed rows of ``old`` are copied. ``trim``: exactly ``need`` rows, no padding."""
    k, r = committed_counts(old) if old is not None else (0, 0)
    checksum = has_checksums(new)
    # A virtual element (a sharded master's arrays along the particles) is its writer's to rebuild, not copied.
    sources = {p: old[p] for p in frame_elements(old) if not old[p]["value"].is_virtual} if old is not None else {}
    cap_frames = capacity(want[0], need[0], max([e["value"].shape[0] for e in sources.values()], default=0))
    cap_frames = need[0] if trim else cap_frames
    for path in ordered([*frame, *sources]):
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
        clock = None
        if group == FIELDS and DensityState.dimensions(name) == ("cell",):
            el = density_element(new[group], name, cap_frames, template.shape, dtype)
        else:  # the noise state, the history, the step control are sampled with the main element: its step and time
            main = f"{PARTICLES}/position" if group == PARTICLES else f"{FIELDS}/mu"
            clock = new.get(main) if f"{group}/{name}" not in MAIN else None
            if path == f"{PARTICLES}/position" and len(template.shape) == 2:
                el = particle_element(new.require_group(group), name, cap_frames, template.shape, dtype)
            else:
                el = slot_element(new.require_group(group), name, cap_frames, template.shape, dtype, clock=clock)
        # An element the old file lacks is blank in its frames, at their steps and times (the main element's).
        timed = src if src is not None else sources.get(next(m for m in MAIN if m.startswith(f"{group}/")))
        for i in range(k):  # one frame at a time: memory stays one frame
            if clock is None:  # its own step and time (the others' are the positions', hard links)
                el["step"][i], el["time"][i] = (
                    (timed["step"][i], timed["time"][i]) if timed is not None else (-1, np.nan)
                )
            el["value"][i] = src["value"][i] if src is not None else blank_row(el["value"])
    obs = new["observables"]
    old_obs = dict(old["observables"].items()) if old is not None else {}
    cap_records = capacity(want[1], need[1], max([e["value"].shape[0] for e in old_obs.values()], default=0))
    cap_records = need[1] if trim else cap_records
    clock = None  # every record has every observable: one step and one time for all (hard links)
    for name in sorted(set(old_obs) | names):
        src = old_obs.get(name)
        el = slot_element(obs, name, cap_records, (), np.float64, checksum, clock)
        if clock is None:
            clock = el
            if r:
                first = next(iter(old_obs.values()))
                el["step"][:r], el["time"][:r] = first["step"][:r], first["time"][:r]
        if r:
            el["value"][:r] = src["value"][:r] if src is not None else np.nan
