"""HDF5 checkpoints of mu_t in the H5MD 1.1 layout, crash-safe and resumable.

Every frame is a :class:`~mfld.discretizations.state.State`: the store writes each array the state
lists (:meth:`~mfld.discretizations.state.ParticleState.arrays`) as an element of the state's group,
and the reader rebuilds the state of the file's kind from them (``from_arrays``). File layout (every
time series is an H5MD element ``{step, time, value}``)::

    /h5md                         version = [1, 1]; author, creator groups
    /particles/mu/box             dimension = p, boundary = "none"
    /particles/mu/position        value: frames x N x p
    /particles/mu/rng_state       value: frames, JSON text of the noise generator
    /particles/mu/history[_k]     value: frames x N x p, what a particle scheme with memory keeps
    /fields/mu                    value: frames x cells_1 x ... x cells_p (grid densities), with
                                  the cell centres w_k of each axis and time as dimension scales
                                  in the same group (netCDF tools and xarray's h5netcdf engine
                                  open it: group "fields/mu"); /fields attrs lower, upper, cells
    /fields/mu_previous[_k]       the density k steps earlier (multi-level schemes: bdf2, sbdf2)
    /observables/<name>           value: records (objective, U, second_moment, ...)
    /parameters                   attrs: config (TOML text), mfld_kind
    /parameters/data/{X, Y, X_test, Y_test[, relevant]}

A run sharded over R processes (``mpiexec -n R mfld run``) writes each rank's rows of
the state's arrays along the particles (positions in ``value``, the others by their
names) to its own file ``<name>.r<rank>of<R>.h5``, and rank 0 writes the master file:
the layout above, whose elements along the particles have HDF5 virtual datasets over the
shards as their ``value`` (the table ``position/sources`` records, per frame, which shard
rows hold which global particles), so loaders see one file, and a resume on another R
just adds shards.

Frames and observables are committed in place (:mod:`mfld.storage.commit`): every time
series holds ``capacity`` preallocated rows, sized from the run's plan, and
``/parameters/committed`` counts the rows that hold data (``[frames, records]``),
written last. A commit costs the bytes of its frame, and a process killed during it
leaves the file as the previous commit left it. Rows past the count are padding:
step -1, time NaN, value undefined; mfld's readers never show them, and a run that
ends (finished or stopped by a signal) drops them (:meth:`~mfld.storage.store.CheckpointStore.finish`),
so only a killed process leaves them for other readers. A change of structure (the
first frame, a new observable, more rows than planned) writes a new file that
replaces the old one, once; a sharded run's master
(small: nothing along the particles) is written anew at each commit the same way.

Modules: :mod:`~mfld.storage.elements` (the H5MD elements), :mod:`~mfld.storage.layout`
(frames and layouts), :mod:`~mfld.storage.store` (the writer), :mod:`~mfld.storage.reader`
(the reader), :mod:`~mfld.storage.checks` (what a file must be to be read),
:mod:`~mfld.storage.sharded` (the MPI master and shards), :mod:`~mfld.storage.commit`
(crash-safe commits), :mod:`~mfld.storage.lock` (one writer per file) and
:mod:`~mfld.storage.provenance` (how a file was made).
"""

from .checks import check_file
from .commit import CheckpointError
from .layout import Frame, frame_bytes
from .reader import CheckpointReader, Snapshot, load
from .sharded import ShardedCheckpointStore
from .store import CheckpointStore

__all__ = [
    "CheckpointError",
    "CheckpointReader",
    "CheckpointStore",
    "Frame",
    "ShardedCheckpointStore",
    "Snapshot",
    "check_file",
    "frame_bytes",
    "load",
]
