"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written checkpoint, pseudo-label, manifest or report, even if the
process is killed mid-write.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | Path, data: bytes, sync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (creating parent folders).

    ``sync=False`` skips the fsync before the rename, for many small files that the caller makes
    durable at once (``os.sync()``) before writing whatever names them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full, read-only, a folder in the way: name the file, keep the old one
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 (HxW or HxWx3) or uint16 (HxW) array as a PNG atomically."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def remove_temporary_files(folder: str | Path) -> int:
    """Delete the temporary files of writes that a killed process left under ``folder``; returns
    how many. Call it only while no other process writes there (e.g. holding the run lock)."""
    count = 0
    for path in Path(folder).rglob(".*.tmp"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            count += 1
    return count


def check_writable(path: str | Path, folder: bool = False) -> None:
    """An OSError naming the obstacle when ``path`` (a file, or a ``folder``) cannot be written: a
    file where a folder is needed, a folder where the file should go, a folder that may not be
    written. Commands call this on their outputs before any work."""
    path = Path(path)
    if path.is_dir() and not folder:
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    existing = next(p for p in (path if folder else path.parent, *path.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, where a folder is needed", str(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot write here (permission denied or read-only)", str(existing))


def read_text_file(path: str | Path, what: str, error: Callable[[Path, str], Exception]) -> str:
    """The UTF-8 text of ``path``; a file that cannot be read or is not UTF-8 text raises
    ``error(path, problem)``, the problem naming ``what`` it is (e.g. "class file")."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = f"cannot read {what} ({exc.strerror})"
    except UnicodeDecodeError:
        problem = f"{what} is not a UTF-8 text file (a binary file?)"
    raise error(path, problem) from None


def not_a_file(path: str | Path, noun: str = "file", missing: str = "does not exist") -> str | None:
    """Why ``path`` cannot be read as a file, in words (``noun`` names what was expected, e.g.
    "checkpoint file"; ``missing`` is said of a path that does not exist); None when it is a
    regular file or a symbolic link to one."""
    path = Path(path)
    if path.is_file():
        return None
    article = "an" if noun[:1] in "aeiou" else "a"
    if path.is_symlink():
        try:
            path.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symbolic link loop"
            return f"is a dangling symbolic link (to {os.readlink(path)}, which does not exist)"
    if path.is_dir():
        return f"is a folder, not {article} {noun}"
    if path.exists():
        return f"is not a regular file (a device, socket or pipe), not {article} {noun}"
    return missing


def walk_files(root: str | Path) -> Iterator[Path]:
    """Every entry under ``root`` that is not a folder, in sorted order: regular files, and also
    what cannot be read as one (dangling symbolic links, link loops, devices), so that callers can
    name them. Symbolic links to folders outside ``root`` are followed, once each; a link to a
    folder inside ``root`` (walked as itself) or to one that holds it (a loop) is not. A folder
    that cannot be listed is an OSError naming it."""
    top = Path(root).resolve()
    followed: set[Path] = set()

    def walk(folder: Path, real: Path) -> Iterator[Path]:
        with os.scandir(folder) as scan:  # an unreadable folder is an OSError naming it
            names = sorted(entry.name for entry in scan)
        for name in names:
            path = folder / name
            if not path.is_dir():
                yield path
                continue
            target = path.resolve()
            if path.is_symlink():
                if target.is_relative_to(top) or real.is_relative_to(target) or target in followed:
                    continue
                followed.add(target)
            yield from walk(path, target)

    yield from walk(Path(root), top)


def require_free_folder(path: str | Path, overwrite: bool = False) -> None:
    """FileExistsError naming ``path`` when it exists and is anything but an empty folder, unless
    ``overwrite``; an OSError when it cannot be written (generators and converters call this
    before any work)."""
    path = Path(path)
    check_writable(path, folder=True)
    if not overwrite and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(errno.EEXIST, "output folder is not empty (pass --overwrite to replace it)", str(path))


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """Build a folder all or nothing: yield a temporary sibling of ``out`` to fill; when the block
    succeeds it replaces ``out`` (whatever was there is deleted), when it fails it is deleted.

    Temporary siblings that a killed process left behind are deleted first.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
            os.replace(out, old / "previous")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
