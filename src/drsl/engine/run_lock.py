"""One process per run directory: an advisory ``fcntl`` lock on ``WORK_DIR/.lock``.

The kernel drops the lock when its process ends, however it ends, so a killed run never leaves a
stale lock behind; the file itself (which names the holder's pid and host, for messages) stays.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from drsl.errors import RunDirError

LOCK_NAME = ".lock"


def lock_holder(folder: str | Path) -> str | None:
    """Who holds ``folder``'s lock (as its file says), or None when nobody does. Writes nothing."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)  # closing also drops a lock taken just now
    return None


class RunLock:
    """Hold ``folder/.lock`` exclusively until :meth:`release` (or the process ends)."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting; RunDirError naming the holder if it is taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirError(
                f"{self.path.parent} is in use by {holder}: wait for it to end or choose another work_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: deleting it would race with a process opening it)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
