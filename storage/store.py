"""The writer of one run's checkpoint file (:class:`CheckpointStore`): metadata at creation, frames and
observables committed in place, padding dropped when the run ends."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from mfld.discretizations.mesh import Grid
from mfld.discretizations.state import State

from .checks import checked
from .commit import CheckpointError, commit_rows, counter, replace
from .elements import (
    COUNT,
    FIELDS,
    H5MD_VERSION,
    PARTICLES,
    Record,
    committed_counts,
    frame_elements,
    holds_density,
)
from .layout import Frame, copy_metadata, fits_in_place, frame_of, lay_out, write_rows
from .provenance import provenance


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment
        return "unknown"


class CheckpointStore:
    """Writer of one run's checkpoint file; observables are buffered until ``commit``.

    ``frames`` and ``records`` are how many frames and observables records the run is planned to
    add: the file is given room for them at its first commit, so every later commit is in place.
    Every array of a committed state is kept, its solver's among them.
    """

    def __init__(self, path: str | Path, frames: int = 0, records: int = 0) -> None:
        self.path = Path(path)
        with checked(self.path) as f:
            k, r = committed_counts(f)
        self._frames = k  # committed frames: only this store writes the file while the run holds its lock
        self._want = (k + frames, r + records)
        self._pending: list[Record] = []
        self._new: tuple[Callable[[h5py.File], None], int] | None = None

    @classmethod
    def create(
        cls,
        path: str | Path,
        config_text: str,
        data: dict[str, np.ndarray],
        kind: str,
        dim: int,
        grid: Grid | None = None,
        author: str = "",
        checksum: bool = False,
        reference_objective: float | None = None,
        frames: int = 0,
        records: int = 0,
    ) -> CheckpointStore:
        """The store of a new file with metadata, configuration and data.

        Nothing is written until the first :meth:`commit`, which writes the whole file at once with
        its first frame and the observables buffered before it (one whole-file write before the
        in-place commits start; :meth:`write_metadata` writes it without a frame).
        ``grid`` (for densities) provides ``lower``, ``upper``, ``cells`` and ``axes()``;
        ``author`` defaults to the login name; ``reference_objective`` is Obj(mu*) of a grid run's gap
        (read back as :attr:`~mfld.storage.reader.CheckpointReader.reference_objective`);
        ``frames`` and ``records`` as for the constructor.
        """
        path = Path(path)

        def edit(f: h5py.File) -> None:
            # The groups a netCDF reader opens (fields/mu, particles/mu/position) have coordinate variables with
            # units and long_name: CF's conventions, which tools look for here.
            f.attrs["Conventions"] = "CF-1.8"
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
            params.attrs["run_id"] = uuid.uuid4().hex  # what the shards of a sharded run carry, to be told apart
            if reference_objective is not None:  # Obj(mu*) of a grid run's gap: a resume does not solve for it again
                params.attrs["reference_objective"] = float(reference_objective)
            for key, value in prov.items():  # how this file was made
                params.require_group("provenance").attrs[key] = value
            g = params.create_group("data")
            for name, arr in data.items():
                if arr is not None:
                    g.create_dataset(name, data=np.asarray(arr), fletcher32=bool(checksum))
            counter(params, "committed", (0, 0))
            f.create_group("observables")
            if not holds_density(kind):
                box = f.create_group(f"{PARTICLES}/box")
                box.attrs["dimension"] = np.int32(dim)
                box.attrs["boundary"] = np.array(["none"] * dim, dtype="S4")
            else:
                assert grid is not None  # a density file is created with its grid
                fields = f.create_group(FIELDS)
                fields.attrs["lower"] = np.asarray(grid.lower, dtype=np.float64)
                fields.attrs["upper"] = np.asarray(grid.upper, dtype=np.float64)
                fields.attrs["cells"] = np.asarray(grid.cells, dtype=np.int64)

        store = cls.__new__(cls)
        store.path, store._want, store._pending, store._frames = path, (frames, records), [], 0
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
        return self._frames > 0

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
            k, r = committed_counts(f)
            frames = [f[p]["value"].shape[0] for p in frame_elements(f)]
            records = [o["value"].shape[0] for o in f["observables"].values()]
        if all(n == k for n in frames) and all(n == r for n in records):
            return

        def edit(new: h5py.File) -> None:
            with h5py.File(self.path, "r") as old:
                copy_metadata(old, new)
                lay_out(old, new, {}, set(), (k, r), (k, r), trim=True)

        try:
            replace(self.path, edit, size=self.path.stat().st_size)
        except CheckpointError as e:
            warnings.warn(f"{e}; the rows past /{COUNT} stay in the file (mfld's readers skip them)", stacklevel=2)

    def commit(self, state: State) -> None:
        """Append a frame of ``state`` (particles or a density) and all buffered observables, crash-safely."""
        self._commit(frame_of(state), state.step, state.time)

    def _commit(self, frame: Frame, step: int, time: float) -> None:
        records = self._pending

        def write(f: h5py.File) -> tuple[int, int]:
            return write_rows(f, frame, step, time, records)

        if self._new is None:
            if not self.path.exists():  # deleted or moved under the run: nothing to append to, and no crash-safe way on
                raise CheckpointError(
                    f"{str(self.path)!r} was deleted or moved while this run was writing it; the run stops here "
                    "(start it again, or resume a copy of the file)"
                )
            with h5py.File(self.path, "r") as f:
                fits = fits_in_place(f, frame, records)
                k, r = committed_counts(f)
        else:
            fits, (k, r) = False, (0, 0)
        if fits:
            commit_rows(self.path, write, COUNT)
        else:
            need = (k + bool(frame), r + len(records))
            names = {name for _, _, values in records for name in values}
            new_file = self._new

            def edit(new: h5py.File) -> None:
                if new_file is not None:
                    new_file[0](new)
                    lay_out(None, new, frame, names, need, self._want)
                else:
                    with h5py.File(self.path, "r") as old:
                        copy_metadata(old, new)
                        lay_out(old, new, frame, names, need, self._want)
                new[COUNT][:2] = write(new)

            rows_ = (max(self._want[0], need[0]), max(self._want[1], need[1]))
            before = new_file[1] if new_file is not None else self.path.stat().st_size
            size = sum(v.nbytes for v in frame.values()) * rows_[0] + 24 * rows_[1] + before
            self.path.parent.mkdir(parents=True, exist_ok=True)
            replace(self.path, edit, size=size)
            self._new = None
        self._pending = []
        self._frames = k + bool(frame)


def master_has_frames(path: Path) -> bool:
    """Whether the file at ``path`` has committed frames (read from the file)."""
    with h5py.File(path, "r") as f:
        return committed_counts(f)[0] > 0
