"""The checkpoint of a particle run sharded over MPI processes: one file of positions per rank and a
master whose positions are an HDF5 virtual dataset over them (see :mod:`mfld.solver.storage`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt

from mfld.discretizations.state import ParticleState, State
from mfld.model.distributed import Communicator

from .checks import check_file
from .commit import commit_rows, counter, counts, replace, rows
from .elements import COUNT, PARTICLES, TEXT, Record, append_row, growing_element
from .layout import capacity
from .store import CheckpointStore, master_has_frames


def append_observables(f: h5py.File, pending: list[Record]) -> None:
    """Append records to a sharded run's master (rewritten whole at each commit, so its series grow)."""
    obs = f["observables"]
    for step, time, values in pending:
        for name, v in values.items():
            if name not in obs:
                growing_element(obs, name, (), np.float64)
            append_row(obs[name], step, time, v)


class ShardedCheckpointStore(CheckpointStore):
    """The checkpoint of a particle run split over MPI processes (see the module doc).

    Every rank calls :meth:`commit`; each commits its frame into its shard in place, then rank 0
    rewrites the master (observables, noise states, the virtual dataset over the shards; no
    positions) and replaces it. A process killed between the two leaves the master describing
    only the frames it had before; the shard row it wrote is reused. It keeps the positions and the
    noise state, not the solver state: a sharded run restarts its solver at checkpoint steps instead.
    """

    holds_solver_state = False

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
        return bool(self.comm.bcast(master_has_frames(self.path) if self.comm.rank == 0 else None))

    def finish(self) -> None:
        """The master holds no padding (it is rewritten whole); the shards keep theirs, behind their counts."""

    def _rewrite_master(self, edit: Callable[[h5py.File], None]) -> None:
        pending = self._pending

        def whole(f: h5py.File) -> None:
            edit(f)
            append_observables(f, pending)
            el, obs = f.get(f"{PARTICLES}/position"), list(f["observables"].values())
            f[COUNT][:2] = (el["step"].shape[0] if el else 0, obs[0]["step"].shape[0] if obs else 0)

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
        cap = capacity(self._shard_want, k + 1, room)

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
        if state.history:
            raise TypeError("a sharded checkpoint holds no scheme history: run a particle scheme with memory alone")
        W = np.asarray(state.positions)
        local_index = self._commit_shard(W)
        sources = self.comm.allgather([self.shard.name, local_index, self.start, self.stop])
        if self.comm.rank == 0:

            def edit(f: h5py.File) -> None:
                group = f[PARTICLES]
                if "position" not in group:
                    el = group.create_group("position")
                    for name, dtype in (("step", np.int64), ("time", np.float64)):
                        el.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(256,))
                    el.create_dataset("sources", shape=(0,), maxshape=(None,), dtype=TEXT, chunks=(256,))
                    growing_element(group, "rng_state", (), TEXT)
                el = group["position"]
                k = el["step"].shape[0]
                for name in ("step", "time", "sources"):
                    el[name].resize(k + 1, axis=0)
                el["step"][k], el["time"][k] = state.step, state.time
                el["sources"][k] = json.dumps(sources)
                append_row(group["rng_state"], state.step, state.time, state.rng_state)
                rebuild_virtual(el, self.total, W.shape[1], W.dtype)

            self._rewrite_master(edit)
        self._pending = []
        self.comm.barrier()


def missing_shards(path: Path, f: h5py.File) -> list[str]:
    """The shard files that the master's table of sources names and its folder lacks."""
    sources = f.get(f"{PARTICLES}/position/sources")
    if sources is None:
        return []
    names = {entry[0] for t in sources[()] for entry in json.loads(t)}
    return sorted(n for n in names if not (path.parent / n).is_file())


def sharded(f: h5py.File) -> bool:
    """Whether the open file's particle positions are a virtual dataset over shard files."""
    return f"{PARTICLES}/position/sources" in f



def rebuild_virtual(el: h5py.Group, total: int, p: int, dtype: npt.DTypeLike) -> None:
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
