"""One writer per checkpoint file: an advisory lock next to it, released when the writer ends.

``<file>.lock`` is locked with ``flock``; the kernel releases the lock when the process dies,
however it dies, so there are no stale locks to clean up. The lock file records the holder's pid,
host and start time for the message the second writer gets. Readers take no lock. ``flock`` locks
the lock file's inode, not its name: a lock file deleted under its writer (``find -name '*.lock'
-delete``) lets a second writer create and lock another, so the writer checks before every write
that the file at ``<file>.lock`` is still the one it locked (:meth:`WriterLock.verify`) and stops
at the first write after losing it; at its end it removes only a lock that is still its own.

The lock belongs to the file, not to the name it was reached by: the checkpoint's path is resolved
(symbolic links followed) before the lock's name is formed, so ``real.h5`` and a link ``alias.h5``
to it take the same lock; a checkpoint with several hard links is refused, since a writer that
reached it by another name would commit into the same rows. The lock file itself is never
followed: it is opened with ``O_NOFOLLOW`` and must be a regular file with one name, owned by the
user running mfld, before anything is written into it, so a link planted at ``FILE.lock`` cannot
make a run truncate or write another file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import stat
import time
from pathlib import Path
from types import TracebackType


class FileLockedError(RuntimeError):
    """Another process is writing the checkpoint, or its lock cannot be taken safely."""


class LockLostError(FileLockedError):
    """The lock file this writer holds was deleted or replaced: another writer may hold the file now."""


def writer_path(path: str | Path) -> Path:
    """The file a writer of ``path`` changes: ``path`` with every symbolic link resolved."""
    return Path(os.path.realpath(path))


def _open_lock(lock_path: Path) -> int:
    """The lock file's descriptor, refused unless it is a regular file of ours with no other name."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(lock_path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileLockedError(
                f"the lock path {str(lock_path)!r} is a symbolic link, which mfld does not follow; "
                "remove it (it is not mfld's) and run again"
            ) from None
        raise FileLockedError(
            f"cannot take the lock {str(lock_path)!r}: {os.strerror(e.errno or 0) or e}; "
            "write the checkpoint to a folder you can write (--out)"
        ) from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_nlink != 1:
        problem = f"has {st.st_nlink} names (hard links): it may be another file"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to user id {st.st_uid}, not to the user running mfld ({os.geteuid()})"
    if problem:
        os.close(fd)
        raise FileLockedError(
            f"the lock path {str(lock_path)!r} {problem}; mfld leaves it untouched: remove it and run again"
        )
    return fd


class WriterLock:
    """``with WriterLock(path):`` holds the right to write ``path``, or raises :class:`FileLockedError`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        real = writer_path(path)
        self.lock_path = real.with_name(real.name + ".lock")
        self._fd: int | None = None

    def _check_names(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            raise FileLockedError(
                f"{str(self.path)!r} has {st.st_nlink} names (hard links); a writer that reached it by another name "
                "would commit into it too: remove the other names, or write to a copy (cp)"
            )

    def __enter__(self) -> WriterLock:
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            reason = os.strerror(e.errno or 0)
            raise FileLockedError(f"cannot make the folder of {str(self.path)!r}: {reason}") from None
        self._check_names()
        while True:
            fd = _open_lock(self.lock_path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise FileLockedError(
                    f"{str(self.path)!r} is being written by {holder}; wait for it to end, or write to another file"
                ) from None
            try:  # the holder before us may have unlinked the file we opened: lock the one at the path
                if os.fstat(fd).st_ino == os.lstat(self.lock_path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._fd = fd
        try:
            self._check_names()  # a hard link made between the first check and the lock
        except FileLockedError:
            self.__exit__(None, None, None)
            raise
        try:  # who holds it, for the message a second writer gets; the lock itself does not need it
            os.ftruncate(fd, 0)
            os.write(
                fd, f"mfld pid {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode()
            )
        except OSError:
            pass
        return self

    def _held(self) -> bool:
        """Whether ``FILE.lock`` is still the file this writer locked (not deleted, not replaced by another)."""
        if self._fd is None:
            return False
        try:
            there = os.lstat(self.lock_path)
        except FileNotFoundError:
            return False
        held = os.fstat(self._fd)
        return (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino)

    def verify(self) -> None:
        """Raise :class:`LockLostError` unless this writer still holds the lock at ``FILE.lock``.

        flock locks an inode, not a name: after ``rm FILE.lock`` a second writer creates and locks a new file of
        that name and writes the checkpoint too, and two writers destroy it. A writer calls this before each
        write and stops at the first failure, leaving the file as its last commit left it.
        """
        if self._fd is not None and not self._held():
            raise LockLostError(
                f"the lock {str(self.lock_path)!r} was deleted or replaced while this run wrote {str(self.path)!r} "
                "(another writer may hold the file now): this run stops without writing again, and the file is as "
                "its last commit left it; do not delete a lock while mfld runs"
            )

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            # Unlink while still holding the lock: a process that opened the old file finds it locked or gone. A lock
            # taken away (deleted, or now another writer's) is not ours to remove.
            if self._held():
                self.lock_path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
