"""Crash-safe changes to an HDF5 file: whole-file replacement, and rows committed in place.

A process killed at any moment (``kill -9``, a power cut after ``fsync``) must leave a file
that reads as before the change or as after it, never half-way. Two ways to change a file:

* :func:`replace` edits a new file and ``os.replace``\\ s it over the old one after ``fsync``.
  It costs a whole file, so it is kept for changes of structure: creating the file, adding a
  dataset, giving a dataset more rows.
* :func:`commit_rows` writes into rows that already exist. Datasets made by :func:`rows` hold
  ``capacity`` rows whose storage is allocated when the dataset is created (and reserved on
  the disk by :func:`replace`, so a commit cannot meet a full disk); a commit fills rows at and
  past the committed count, flushes them to the disk, and only then overwrites the count
  (:func:`counter`). Readers trust the rows below the count. It costs the rows written.

Why the in-place write is safe: writing raw data into storage allocated at creation changes
no HDF5 metadata (the chunk addresses are fixed; ``tests/storage/test_commit.py`` compares every byte
of the file outside the rows written), so the file's structure is the one a reader already
accepted. The count is the first 16 bytes of a 4 KiB block aligned to 4 KiB and is written by
one call, so it lies within one disk sector, which a drive writes whole or not at all.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
from h5py import h5d, h5p

ALIGN = 4096  # objects of this size or more start on a 4 KiB boundary: the count's block does
_COUNT_WORDS = ALIGN // 8
_MARGIN = 1 << 20  # HDF5's own metadata and chunk rounding, generously


class CheckpointError(ValueError):
    """A file is missing, not HDF5, not H5MD, not written by mfld or inconsistent; or a change to it
    could not be made (the file is then as it was before the change)."""


def fsync(path: Path) -> None:
    """Flush the file (or folder) at ``path`` to the disk, whichever descriptor wrote it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_room(path: Path, size: int) -> None:
    """Refuse, before HDF5 writes a byte, a write of ``size`` bytes that the disk or the file-size limit cannot hold.

    HDF5 does not recover from a write that fails half-way (the process can crash at exit), so the
    room is checked first; :func:`replace` turns what the check cannot foresee into an error too.
    """
    free = shutil.disk_usage(path.parent).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    kept = "the file keeps the frames saved before" if path.exists() else "no file was written"
    if size > free:
        raise CheckpointError(
            f"no room to write {str(path)!r}: it needs about {size / 2**20:.1f} MiB, the disk has "
            f"{free / 2**20:.1f} MiB free; {kept}"
        )
    if limit != resource.RLIM_INFINITY and size > limit:
        raise CheckpointError(
            f"no room to write {str(path)!r}: it needs about {size / 2**20:.1f} MiB, above the "
            f"file-size limit of {limit / 2**20:.1f} MiB (ulimit -f); {kept}"
        )


RELEASE_FAILED = False
"""Set when HDF5 failed a write while h5py released an object (:func:`surfaced`): the library's state for that
file is then suspect, and closing it again at interpreter exit can crash the process; the command line ends at
once after its message (:func:`mfld.solver.cli.main`), and any other process by :func:`_end_at_exit`."""


def _end_at_exit() -> None:
    """The last exit handler of a process in which :data:`RELEASE_FAILED` was set: the other handlers run, then the
    process ends without HDF5's own clean-up, which would close the object whose release failed (h5py lost it, HDF5
    still holds it) and crash the interpreter (SIGSEGV in a Python-API script that had caught the error, measured
    with a write failure injected by strace). The exit status is 1: a write of the process failed, and the status
    the program meant (``sys.exit(n)``, pytest's) cannot be seen from here, so none that says success is given."""
    import atexit

    atexit.unregister(_end_at_exit)
    atexit._run_exitfuncs()
    print(
        "mfld: the process ends with status 1 and without HDF5's clean-up: a write failed earlier while an HDF5 "
        "object was released (reported then), and closing that file again would crash it",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


@contextlib.contextmanager
def surfaced() -> Iterator[None]:
    """Raise, as an OSError, a write error that HDF5 met while h5py released an object (a dataset closed at
    the end of a statement flushes what it holds): h5py can only print those ("Exception ignored in
    ObjectID.__dealloc__", with a traceback printed before it), and the process would carry on with a write
    lost. The printed traceback is withheld; whatever else was printed meanwhile is passed on. Errors of other
    objects go to the hook as before."""
    global RELEASE_FAILED
    caught: list[BaseException] = []
    previous, stderr = sys.unraisablehook, sys.stderr
    held = io.StringIO()

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, RuntimeError | OSError) and "h5py" in repr(unraisable.object):
            caught.append(unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook, sys.stderr = hook, held
    try:
        yield
    finally:
        sys.unraisablehook, sys.stderr = previous, stderr
        if not caught and held.getvalue():
            stderr.write(held.getvalue())
    if caught:
        if not RELEASE_FAILED:
            import atexit

            atexit.register(_end_at_exit)
        RELEASE_FAILED = True
        raise write_error(caught[0])


def write_error(e: BaseException) -> OSError:
    """An HDF5 write failure as an OSError with its errno (h5py raises some as RuntimeError or ValueError, the
    errno in the text: "file write failed: ..., errno = 28, ...")."""
    if isinstance(e, OSError):
        return e
    text = str(e)
    errno = next((int(m) for m in re.findall(r"errno = (\d+)", text)), 0)
    return OSError(errno, os.strerror(errno) if errno else text.splitlines()[0])


def _failed(path: Path, e: OSError) -> CheckpointError:
    reason = os.strerror(e.errno) if e.errno else str(e).splitlines()[0]
    kept = "the file keeps the frames saved before" if path.exists() else "no file was written"
    return CheckpointError(f"writing {str(path)!r} failed ({reason}); {kept}")


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of the whole file now (no bytes are written where the filesystem allows),
    so later in-place commits into not-yet-written rows cannot run out of disk."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: the filesystem cannot reserve; check_room did
            raise
    finally:
        os.close(fd)


def open_new(path: Path) -> h5py.File:
    """A new HDF5 file for :func:`replace`, with large objects aligned so that :func:`counter` blocks are."""
    return h5py.File(path, "w", alignment_threshold=ALIGN, alignment_interval=ALIGN, rdcc_nbytes=0)


def replace(path: Path, edit: Callable[[h5py.File], None], size: int, copy: bool = False) -> None:
    """Make the file at ``path`` with ``edit`` in a new file, then replace ``path`` by it: all or nothing.

    ``edit`` receives the new file (empty, or a copy of ``path`` when ``copy``) and may read the old
    one. ``size`` is about how many bytes the new file takes. A write that cannot fit (a full disk,
    a file-size limit) or fails (a read-only folder) leaves ``path`` as it was, removes the new file
    and raises :class:`CheckpointError` with the reason.
    """
    tmp = path.with_name(path.name + ".partial")
    check_room(path, size + (path.stat().st_size if copy else 0) + _MARGIN)
    try:
        # Whatever sits at the temporary name goes first: a link planted there is removed, not followed.
        tmp.unlink(missing_ok=True)
        if copy:
            shutil.copyfile(path, tmp)
        with surfaced(), h5py.File(tmp, "a", rdcc_nbytes=0) if copy else open_new(tmp) as f:
            edit(f)
            f.flush()
        _reserve(tmp)
        fsync(tmp)
        os.replace(tmp, path)
    except Exception as e:  # h5py raises a failed write as OSError, RuntimeError or ValueError
        if not isinstance(e, OSError) and "write failed" not in str(e):
            raise
        tmp.unlink(missing_ok=True)
        raise _failed(path, write_error(e)) from None
    try:
        fsync(path.parent)
    except OSError:  # pragma: no cover - directories cannot be fsynced everywhere
        pass


def rows(
    group: h5py.Group,
    name: str,
    capacity: int,
    row_shape: tuple[int, ...],
    dtype: npt.DTypeLike,
    checksum: bool = False,
    fill: object = None,
) -> h5py.Dataset:
    """A dataset of ``capacity`` rows of ``row_shape``, its storage allocated now, for :func:`commit_rows`.

    Rows of arrays are chunked one per row; rows of scalars in chunks of about 512 bytes (HDF5
    rewrites a whole chunk to change a row of it, so a commit rewrites about 512 bytes per series). ``fill`` is the
    value of rows never written (written at creation); without one, large rows are not filled, which
    costs no writes (rows past the count are then undefined, as readers are told by the count).
    """
    plist = h5p.create(h5p.DATASET_CREATE)
    plist.set_alloc_time(h5d.ALLOC_TIME_EARLY)
    per_chunk = max(1, 512 // np.dtype(dtype).itemsize)
    chunks = (1, *row_shape) if row_shape else (min(max(capacity, 1), per_chunk),)
    return group.create_dataset(
        name,
        shape=(capacity, *row_shape),
        dtype=dtype,
        chunks=chunks,
        fletcher32=checksum,
        dcpl=plist,
        fillvalue=fill,
        fill_time="never" if fill is None else "alloc",
    )


def counter(group: h5py.Group, name: str, counts: tuple[int, ...]) -> h5py.Dataset:
    """The committed counts, ``counts`` to start: the first words of a 4 KiB block aligned to 4 KiB."""
    plist = h5p.create(h5p.DATASET_CREATE)
    plist.set_alloc_time(h5d.ALLOC_TIME_EARLY)
    data = np.zeros(_COUNT_WORDS, dtype=np.int64)
    data[: len(counts)] = counts
    return group.create_dataset(name, data=data, dcpl=plist)


def counts(dataset: h5py.Dataset, n: int) -> tuple[int, ...] | None:
    """The first ``n`` committed counts, or None if ``dataset`` is not a counter."""
    if dataset.shape != (_COUNT_WORDS,) or dataset.dtype != np.int64 or dataset.chunks is not None:
        return None
    return tuple(int(c) for c in dataset[:n])


def commit_rows(path: Path, write: Callable[[h5py.File], tuple[int, ...]], count: str) -> None:
    """Write rows in place with ``write`` (which returns the new counts), then the counts: the commit.

    A process killed before the counts reach the disk leaves the previous counts, and readers the
    previous rows; a write that fails (on a filesystem that could not reserve the blocks) does too.
    """
    try:
        # HDF5's own file lock would make any reader that holds the file open (a notebook, h5dump)
        # fail the run's commit; the writer is unique by mfld's lock, and a reader only ever
        # trusts the rows below the count, which a commit does not touch.
        with surfaced(), h5py.File(path, "r+", locking=False, rdcc_nbytes=0) as f:
            new = write(f)
            f.flush()
            fsync(path)
            f[count][: len(new)] = new  # one write of len(new) words inside one sector: the commit
            f.flush()
        fsync(path)
    except Exception as e:  # h5py raises a failed write as OSError, RuntimeError or ValueError
        if not isinstance(e, OSError) and "write failed" not in str(e):
            raise
        raise _failed(path, write_error(e)) from None
