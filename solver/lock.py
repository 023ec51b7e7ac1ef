"""One writer per checkpoint file: an advisory lock next to it, released when the writer ends.

``<file>.lock`` is locked with ``flock``; the kernel releases the lock when the process dies,
however it dies, so there are no stale locks to clean up. The lock file records the holder's pid,
host and start time for the message the second writer gets. Readers take no lock.
"""

from __future__ import annotations

import fcntl
import os
import platform
import time
from pathlib import Path
from types import TracebackType


class FileLockedError(RuntimeError):
    """Another process is writing the checkpoint."""


class WriterLock:
    """``with WriterLock(path):`` holds the right to write ``path``, or raises :class:`FileLockedError`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise FileLockedError(
                    f"{str(self.path)!r} is being written by {holder}; wait for it to end, or write to another file"
                ) from None
            try:  # the holder before us may have unlinked the file we opened: lock the one at the path
                if os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"mfld pid {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                 .encode())
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            # Unlink while still holding the lock: a process that opened the old file finds it locked or gone.
            self.lock_path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
