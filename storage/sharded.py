"""The checkpoint of a particle run sharded over MPI processes: one file per rank with its block of every array
along the particles, and a master with the rest whose arrays along the particles are HDF5 virtual datasets over
the shards (see :mod:`mfld.storage`)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from mfld.discretizations.state import ParticleState, State
from mfld.model.distributed import Communicator

from .checks import check_file
from .commit import commit_rows, counter, counts, replace, rows
from .elements import COUNT, PARTICLES, TEXT, committed_counts, shard_dataset
from .layout import Frame, blank_row, capacity, copy_metadata, frame_of, lay_out, write_rows
from .store import CheckpointStore, master_has_frames

Block = dict[str, np.ndarray]
"""A process's rows of the arrays of a state that lie along the particles, by array name."""


def along_particles(state: State, name: str) -> bool:
    """Whether the array ``name`` of ``state`` has the particles as its first axis (each process holds a block)."""
    return (type(state).dimensions(name) or ())[:1] == ("particle",)


class ShardedCheckpointStore(CheckpointStore):
    """The checkpoint of a particle run split over MPI processes (see the module doc).

    Every rank calls :meth:`commit`; each commits its rows of the arrays along the particles (the positions, a
    scheme's history, the solver's measure) into its shard in place; then rank 0 writes the master anew, with
    the same elements as a single file: slots for the other arrays (the noise state, the solver's first
    guesses) and the observables, and virtual datasets over the shards for the arrays along the particles.
    A process killed between the two leaves the master describing only the frames it had before; the shard
    row it wrote is reused.
    """

    def __init__(
        self, path: str | Path, comm: Communicator, start: int, stop: int, total: int, frames: int = 0
    ) -> None:
        self.comm, self.start, self.stop, self.total = comm, start, stop, total
        self.path = Path(path)
        self.shard = self.path.with_name(f"{self.path.stem}.r{comm.rank}of{comm.size}{self.path.suffix}")
        self._shard_want = self._shard_layout()[0] + frames
        self._pending = []
        self._new = None
        if comm.rank == 0:
            check_file(self.path)
        # The master's identity, which every shard of the run carries (a master without one: written before it).
        self.run_id = comm.bcast(run_id(self.path) if comm.rank == 0 else None)

    def has_frames(self) -> bool:
        return bool(self.comm.bcast(master_has_frames(self.path) if self.comm.rank == 0 else None))

    def finish(self) -> None:
        """The master holds no padding (it is written anew each time); the shards keep theirs, behind their
        counts."""

    def commit_observables(self) -> None:
        if self.comm.rank == 0:  # the observables live in the master, which rank 0 writes
            self._write_master({}, None, {})
        self._pending = []
        self.comm.barrier()

    def commit(self, state: State) -> None:
        if not isinstance(state, ParticleState):
            raise TypeError(f"a sharded checkpoint holds particles, not {type(state).__name__}")
        frame = frame_of(state)
        block = {name: np.asarray(v) for name, v in state.arrays().items() if along_particles(state, name)}
        for name, v in block.items():
            if v.shape[0] != self.stop - self.start:
                raise ValueError(
                    f"{name} has {v.shape[0]} rows along the particles, not this process's {self.stop - self.start}"
                )
        row = self._commit_shard(block)
        sources = self.comm.allgather([self.shard.name, row, self.start, self.stop])
        if self.comm.rank == 0:
            rest = {path: v for path, v in frame.items() if path.rsplit("/", 1)[1] not in block}
            self._write_master(
                rest, (state.step, state.time, sources), {name: (v.shape[1:], v.dtype) for name, v in block.items()}
            )
        self._pending = []
        self.comm.barrier()

    def _shard_layout(self) -> tuple[int, int, dict[str, tuple[tuple[int, ...], np.dtype]]]:
        """This process's shard: committed rows, rows it has room for (0 without a counter), and the row shape
        and type of each of its datasets."""
        if not self.shard.exists():
            return 0, 0, {}
        with h5py.File(self.shard, "r") as f:
            c = counts(f["committed"], 1) if isinstance(f.get("committed"), h5py.Dataset) else None
            held = {name: (d.shape[1:], d.dtype) for name, d in f.items() if name != "committed"}
            rows_ = f["value"].shape[0]
            return (c[0] if c is not None else rows_), (rows_ if c is not None else 0), held

    def _commit_shard(self, block: Block) -> int:
        """Commit ``block`` as the next row of this process's shard (a dataset that it lacks is blank there);
        the row's index."""
        k, room, held = self._shard_layout()
        wanted = {shard_dataset(name): v for name, v in block.items()}

        def write(f: h5py.File) -> tuple[int]:
            for name in f:
                if name != "committed":  # a row reused after a crash must not keep another frame's array
                    f[name][k] = wanted[name] if name in wanted else blank_row(f[name])
            return (k + 1,)

        if room > k and all(held.get(name) == (v.shape, v.dtype) for name, v in wanted.items()):
            commit_rows(self.shard, write, "committed")
            return k
        old = self.shard.exists()
        cap = capacity(self._shard_want, k + 1, room)
        layout = {**held, **{name: (v.shape, v.dtype) for name, v in wanted.items()}}

        def edit(new: h5py.File) -> None:
            for name, (shape, dtype) in layout.items():
                rows(new, name, cap, shape, dtype)
            new.attrs["start"], new.attrs["stop"] = self.start, self.stop
            if self.run_id:
                new.attrs["run_id"] = self.run_id
            counter(new, "committed", (k,))
            with h5py.File(self.shard, "r") if old else contextlib.nullcontext() as f:
                for name in layout:  # one row at a time: memory stays one row
                    for i in range(k):
                        new[name][i] = f[name][i] if f is not None and name in held else blank_row(new[name])
            new["committed"][:1] = write(new)

        replace(self.shard, edit, size=cap * sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in layout.values()))
        return k

    def _write_master(
        self,
        rest: Frame,
        sources: tuple[int, float, list[list[Any]]] | None,
        block: dict[str, tuple[tuple[int, ...], np.dtype]],
    ) -> None:
        """Write the master anew: the old one's series and the buffered observables, and with ``sources`` (step,
        time, and where each process's rows are) a frame: ``rest``'s arrays in slots, and a virtual dataset over
        the shards for each array along the particles (``block``'s and the old master's)."""
        records = self._pending

        def edit(new: h5py.File) -> None:
            with h5py.File(self.path, "r") as old:
                copy_metadata(old, new)
                k, r = committed_counts(old)
                table = source_table(old, k) + ([sources[2]] if sources else [])
                need = (len(table), r + len(records))
                along = {**virtual_arrays(old), **block}
                names = {name for _, _, values in records for name in values}
                if table:  # the clock of every particle element; the others' step and time are hard links to it
                    el = new.require_group(f"{PARTICLES}/position")
                    rows(el, "step", need[0], (), np.int64, fill=-1)
                    rows(el, "time", need[0], (), np.float64, fill=np.nan)
                    if k:
                        el["step"][:k], el["time"][:k] = (
                            old[f"{PARTICLES}/position/step"][:k],
                            old[f"{PARTICLES}/position/time"][:k],
                        )
                    el.create_dataset("sources", data=[json.dumps(t) for t in table], dtype=TEXT)
                lay_out(old, new, rest, names, need, need, trim=True)
            step, time = (sources[0], sources[1]) if sources else (0, 0.0)
            new[COUNT][:2] = write_rows(new, rest, step, time, records)
            for name, (shape, dtype) in along.items():
                rebuild_virtual(new[PARTICLES], name, table, self.total, shape, dtype)

        # The new master holds what the old one did, the new records and a frame's small arrays and virtual layouts.
        size = self.path.stat().st_size + 64 * len(records) + 4096 * (len(block) + 1)
        replace(self.path, edit, size=size + sum(v.nbytes for v in rest.values()))


def source_table(f: h5py.File, frames: int) -> list[list[Any]]:
    """Per committed frame of a master, where the processes' rows are: ``[shard file, row, start, stop]`` each."""
    sources = f.get(f"{PARTICLES}/position/sources")
    return [json.loads(t) for t in sources.asstr()[:frames]] if sources is not None else []


def virtual_arrays(f: h5py.File) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The master's arrays along the particles (virtual datasets over its shards): the shape of a particle's row
    and the type of each."""
    group = f.get(PARTICLES)
    if not isinstance(group, h5py.Group):
        return {}
    return {
        name: (el["value"].shape[2:], el["value"].dtype)
        for name, el in group.items()
        if isinstance(el, h5py.Group) and isinstance(el.get("value"), h5py.Dataset) and el["value"].is_virtual
    }


def run_id(path: Path) -> str:
    """The run identity a file's ``/parameters`` holds ("" for a file written before mfld wrote one)."""
    with h5py.File(path, "r") as f:
        return str(f["parameters"].attrs.get("run_id", ""))


def shard_problems(path: Path, f: h5py.File) -> list[str]:
    """What is wrong with the shards a master's table of sources names: a shard of another run (its ``run_id``),
    one whose rows are not those the table gives it (``start``, ``stop``: two shards' names exchanged), one with
    fewer committed rows than the table reads, or a file that is no shard of mfld's at all."""
    sources = f.get(f"{PARTICLES}/position/sources")
    table = source_table(f, sources.shape[0]) if sources is not None else []
    identity = str(f["parameters"].attrs.get("run_id", ""))
    expected: dict[str, tuple[int, int, int]] = {}
    for frame in table:
        for name, row, start, stop in frame:
            seen = expected.get(name)
            if seen is not None and seen[1:] != (start, stop):
                return [f"the table of sources gives shard {name} rows {seen[1]}:{seen[2]} and {start}:{stop}"]
            expected[name] = (max(row, seen[0] if seen else row), start, stop)
    problems = []
    for name, (row, start, stop) in sorted(expected.items()):
        shard = path.parent / name
        if not shard.is_file():
            continue  # missing_shards says so
        try:
            with h5py.File(shard, "r") as g:
                a = g.attrs
                if "start" not in a or "stop" not in a or not isinstance(g.get("committed"), h5py.Dataset):
                    problems.append(f"{name} is not a shard of an mfld run (no start, stop and committed count)")
                    continue
                if identity and str(a.get("run_id", "")) != identity:
                    other = str(a.get("run_id", "")) or "none"
                    problems.append(f"{name} belongs to another run (its run id {other}, the master's {identity})")
                    continue
                if (int(a["start"]), int(a["stop"])) != (start, stop):
                    problems.append(
                        f"{name} holds particles {int(a['start'])}:{int(a['stop'])}, but the master reads "
                        f"{start}:{stop} from it (shard files renamed or exchanged?)"
                    )
                    continue
                c = counts(g["committed"], 1)
                if c is None or c[0] <= row:
                    problems.append(f"{name} has {c[0] if c else 'no'} committed rows; the master reads row {row}")
        except OSError as e:
            problems.append(f"{name} cannot be read as HDF5: {e}")
    return problems


def missing_shards(path: Path, f: h5py.File) -> list[str]:
    """The shard files that the master's table of sources names and its folder lacks."""
    sources = f.get(f"{PARTICLES}/position/sources")
    table = source_table(f, sources.shape[0]) if sources is not None else []
    names = {entry[0] for frame in table for entry in frame}
    return sorted(n for n in names if not (path.parent / n).is_file())


def sharded(f: h5py.File) -> bool:
    """Whether the open file's particle positions are a virtual dataset over shard files."""
    return f"{PARTICLES}/position/sources" in f


def rebuild_virtual(
    group: h5py.Group, name: str, table: list[list[Any]], total: int, shape: tuple[int, ...], dtype: npt.DTypeLike
) -> None:
    """``group/name/value`` as a virtual dataset (frames x total x ``shape``) over the shard rows ``table`` lists.

    Shards are named relative to the master, which HDF5 resolves against the master's folder; a shard that does
    not have the array (written before it existed) reads as NaN there, an absent row.
    """
    el = group.require_group(name)
    if name != "position":
        el["step"], el["time"] = group["position/step"], group["position/time"]
    layout = h5py.VirtualLayout(shape=(len(table), total, *shape), dtype=dtype)
    for k, frame in enumerate(table):
        for shard, index, start, stop in frame:
            source = h5py.VirtualSource(shard, shard_dataset(name), shape=(index + 1, stop - start, *shape))
            layout[k, start:stop] = source[index]
    el.create_virtual_dataset("value", layout, fillvalue=np.nan)
