"""Who may write where: every command that writes checks its outputs here before any work.

An output may not be one of the command's own inputs, lie inside an input folder (unless the
command reads around it), or, for a folder that is written whole, hold an input. Nor may it be
anything a run directory holds that drsl wrote there (:data:`RUN_ENTRIES`: checkpoints, the run
record, config, logs, evaluation, class set, pseudo-label sets, ...), or the run directory itself,
unless the command is that file's own writer. A run directory holds only its run: never a
dataset, predictions or exports.

Nothing here imports torch, so the command line stays fast.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from drsl.config import Config
from drsl.engine.logging import TEXT_LOG
from drsl.engine.run_lock import LOCK_NAME
from drsl.errors import OutputError
from drsl.fileio import check_writable

#: The record a run directory holds (see :mod:`drsl.engine.run_dir`).
RECORD = "run.json"
#: Temporary files of interrupted atomic writes (``.NAME.XXXX.tmp``, :mod:`drsl.fileio`).
TEMPORARY = ".*.tmp"


@dataclass(frozen=True)
class RunEntry:
    """A top-level name in a run directory that drsl writes, and who writes it."""

    name: str
    #: What it is, for messages.
    what: str
    #: The drsl command that writes it.
    writer: str = "train"
    #: For a folder: patterns of the names inside it that drsl writes (None: all of it).
    children: tuple[str, ...] | None = None


RUN_ENTRIES = (
    RunEntry(RECORD, "its run record"),
    RunEntry("config.yaml", "its config"),
    RunEntry("environment.json", "its software record"),
    RunEntry(LOCK_NAME, "its lock"),
    RunEntry("metrics.jsonl", "its training log"),
    RunEntry(TEXT_LOG, "its console log"),
    RunEntry("eval.json", "its evaluation"),
    RunEntry("classes.yaml", "its class set"),
    RunEntry("source_class_counts.json", "its source class statistics"),
    RunEntry("checkpoints", "its checkpoints", children=("latest.pt", "iter_*.pt", TEMPORARY)),
    RunEntry("tb", "its TensorBoard log", children=("events.out.tfevents.*", TEMPORARY)),
    RunEntry("pseudo_labels", "its pseudo-label sets", children=("round_*", "teacher", TEMPORARY)),
    RunEntry("wandb", "its Weights & Biases log"),
    RunEntry("report.html", "its report", writer="report"),
)
_BY_NAME = {entry.name: entry for entry in RUN_ENTRIES}


def is_run_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a drsl run: a run record (``run.json`` with its
    history), or, for runs made before run records, ``config.yaml`` with checkpoints or logs."""
    path = Path(path)
    record = path / RECORD
    if record.is_file():
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("history"), list):
            return True
    legacy = ("checkpoints", "metrics.jsonl", "eval.json")
    return (path / "config.yaml").is_file() and any((path / name).exists() for name in legacy)


def _entry_of(relative: tuple[str, ...]) -> RunEntry | None:
    """The run entry a path inside a run directory (its parts) belongs to, if drsl wrote it."""
    entry = _BY_NAME.get(relative[0])
    if entry is None:
        return RunEntry(relative[0], "an unfinished write") if fnmatch(relative[0], TEMPORARY) else None
    if entry.children is None or len(relative) == 1 or any(fnmatch(relative[1], p) for p in entry.children):
        return entry
    return None


def run_owner(path: str | Path) -> tuple[Path, RunEntry] | None:
    """The run directory that wrote ``path`` (symbolic links resolved) and the entry it belongs
    to; None when no run wrote it."""
    target = Path(os.path.realpath(path))
    for folder in target.parents:
        if is_run_folder(folder):
            entry = _entry_of(target.relative_to(folder).parts)
            return (folder, entry) if entry is not None else None
    return None


def run_outputs(run_dir: str | Path) -> list[Path]:
    """What drsl wrote in ``run_dir`` (top-level entries, or the drsl-written names inside its
    folders), sorted; everything else in it is someone else's."""
    run_dir = Path(run_dir)
    found: list[Path] = []
    for path in sorted(run_dir.iterdir()):
        entry = _entry_of((path.name,))
        if entry is None:
            continue
        if entry.children is None or not path.is_dir() or path.is_symlink():
            found.append(path)
        else:
            found += [child for child in sorted(path.iterdir()) if _entry_of((path.name, child.name))]
    return found


def _holds_run(folder: Path) -> Path | None:
    """A run directory at or under ``folder`` (symbolic links not followed), if any."""
    for current, subfolders, _ in os.walk(folder):
        if is_run_folder(current):
            return Path(current)
        subfolders.sort()
    return None


#: A command's inputs: (role, e.g. "the checkpoint", and path; None when not given).
Inputs = Iterable[tuple[str, "str | Path | None"]]


def _existing(inputs: Inputs) -> Iterator[tuple[str, Path, Path]]:
    """(role, path as given, path resolved) of the inputs that exist."""
    for role, text in inputs:
        if text and Path(text).exists():
            yield role, Path(text), Path(text).resolve()


def run_inputs(config: Config) -> list[tuple[str, str | None]]:
    """The files and folders a run of ``config`` reads: datasets, list files, class files and
    maps, initial weights."""
    found = [
        ("init_checkpoint", config.init_checkpoint), ("model.pretrained", config.model.pretrained),
        ("data.classes", config.data.classes),
    ]
    for key in ("source", "target", "val"):
        if (dataset := getattr(config.data, key)) is not None:
            found += [(f"data.{key}.{name}", getattr(dataset, name)) for name in ("root", "list_file", "class_map")]
    return found


def check_data_output(path: str | Path, config: Config, *, folder: bool = False, whole: bool = False) -> None:
    """:func:`check_output` against what a run of ``config`` (a checkpoint's) reads: what a command
    derives from a checkpoint (predictions, pseudo-labels) never lands in, on or around its run's
    datasets, list files or class files, where a later run would read it as data."""
    check_output(path, run_inputs(config), folder=folder, whole=whole, reader="the checkpoint's run")


def _refused(path: Path, why: str) -> OutputError:
    return OutputError(errno.EEXIST, why, str(path))


def check_output(
    path: str | Path, inputs: Inputs = (), *, folder: bool = False, whole: bool = False,
    inside_inputs: bool = False, writer: str | None = None, run_folder: bool = False,
    reader: str = "this command",
) -> None:
    """An OSError (:class:`OutputError` for the rules here) naming ``path`` when the command may
    not write it.

    ``inputs``: the command's inputs. ``folder``: the output is a folder. ``whole``: a folder
    written or replaced as a whole, which may not hold an input or a run (for a run directory:
    its run is replaced, so no input may be a file of that run). ``inside_inputs``: the command
    may write inside an input folder (it never reads its own outputs back). ``writer``: the
    command, which may write the run files it is the writer of (``report``: a run's report).
    ``run_folder``: the output is a run directory (``drsl train``), which may hold a run already.
    ``reader``: who reads ``inputs``, for messages (e.g. the run a checkpoint comes from).
    """
    path = Path(path)
    check_writable(path, folder)
    target = Path(os.path.realpath(path))
    existing = list(_existing(inputs))
    for role, given, real in existing:
        if real == target:
            raise _refused(path, f"{reader} reads it ({role}); write the output elsewhere")
        if not inside_inputs and given.is_dir() and target.is_relative_to(real):
            raise _refused(path, f"lies inside {given}, which {reader} reads ({role}); write the output elsewhere")
        if whole and not run_folder and real.is_relative_to(target):
            raise _refused(path, f"holds {given}, which {reader} reads ({role}); write the output elsewhere")
        if whole and run_folder and (owner := run_owner(real)) is not None and owner[0] == target:
            raise _refused(path, f"replacing its run would delete {given} ({role}), which this run reads; copy it elsewhere first")
    if not run_folder and target.is_dir() and is_run_folder(target):
        raise _refused(path, "is the folder of a drsl run, which holds only what its run writes; choose another folder")
    owner = run_owner(target)
    if owner is not None and (run_folder or owner[1].writer != writer):
        raise _refused(
            path, f"belongs to the drsl run in {owner[0]} ({owner[1].what}, written by drsl {owner[1].writer}); "
            "choose another path"
        )
    if whole and not run_folder and target.is_dir() and (run := _holds_run(target)) is not None:
        raise _refused(path, f"holds the drsl run {run}, which this command would replace; choose another folder")
