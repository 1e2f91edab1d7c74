"""Errors that reach the user as one line (``drsl CMD: error: ...``, exit status 2).

They live in this light module, free of torch, so that the command line can name them without
importing the heavy modules that raise them (``drsl --help`` stays fast).
"""

from __future__ import annotations

import errno
import re
import reprlib
from collections.abc import Sequence

#: How torch re-raises an exception from a DataLoader worker: a new exception of the same class
#: (or a RuntimeError, when the class cannot be built from one string) whose message is
#: "Caught NAME in DataLoader worker process N." and the worker's whole traceback.
_WORKER = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.")


#: Most characters of a value that an error message echoes.
MAX_ECHO = 120


def shorten(value: object, limit: int = MAX_ECHO, quote: bool = True) -> str:
    """``repr(value)`` for an error message, at most about ``limit`` characters: long strings,
    lists and mappings are abbreviated with ``...`` (a huge value must not become a huge
    message, nor be printed whole in memory first). ``quote=False``: text as it is (cut)."""
    if not quote and isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "..."
    brief = reprlib.Repr()
    brief.maxlevel, brief.maxstring, brief.maxother = 3, limit, limit
    brief.maxlist = brief.maxtuple = brief.maxdict = brief.maxset = 8
    text = brief.repr(value)
    return text if len(text) <= limit + 3 else text[:limit] + "..."


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def listed(items: Sequence[object], limit: int) -> str:
    """The first ``limit`` of ``items``, comma-separated, and "(+N more)" for the rest."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def parse_problem(exc: BaseException) -> str:
    """A parser's message (YAML, JSON) on one line, cut to 300 characters, for an error message."""
    return shorten(" ".join(str(exc).split()), 300, quote=False)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the file and the reason."""


class WeightsError(ValueError):
    """Weights that do not fit the model, with the file and the mismatching keys named."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the iteration and every loss term."""


class DistributedError(RuntimeError):
    """Processes of a distributed job that cannot start together (a rank missing, the master
    unreachable); the message names the ranks, the address and the key that sets the wait."""


class ImageInputError(ValueError):
    """An image given to the Python API in a form it does not take; the message names the forms
    it takes (:mod:`drsl.image_inputs`)."""


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (another run in it, in use by another
    process, nothing to resume...); the message says what to do instead."""


class OutputError(OSError):
    """An output that would overwrite one of the command's inputs or a file a run owns: raised as
    ``OutputError(errno.EEXIST, why, path)``, shown as ``path: why`` like every OS error."""


def describe_os_error(exc: OSError) -> str:
    """``PATH: reason`` for an OS error (read-only or occupied path, disk full, ...)."""
    reason = exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    text = f"{' -> '.join(paths)}: {reason}" if paths else reason
    if exc.errno == errno.ENOSPC:
        text += " (the disk is full; files being replaced keep their previous content: free space, then resume)"
    return text


def _names(classes: tuple[type[BaseException], ...]) -> set[str]:
    """The names of ``classes`` and all their subclasses."""
    names: set[str] = set()
    pending = list(classes)
    while pending:
        cls = pending.pop()
        if cls.__name__ not in names:
            names.add(cls.__name__)
            pending += cls.__subclasses__()
    return names


def user_error_message(exc: BaseException, user_errors: tuple[type[BaseException], ...]) -> str | None:
    """The one-line message of an error the user can fix (an instance of ``user_errors`` or an OS
    error, raised here or in a DataLoader worker), or None for anything else (a bug)."""
    text = str(exc)
    worker = _WORKER.match(text)
    if worker is not None:
        if worker.group(1) not in _names((*user_errors, OSError)):
            return None
        last = text.strip().splitlines()[-1]  # "package.module.Name: message"
        text = re.sub(r"^[\w.]+: ", "", last, count=1)
    elif isinstance(exc, OSError) and exc.errno is not None:
        text = describe_os_error(exc)
    elif not isinstance(exc, user_errors):
        return None
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())
