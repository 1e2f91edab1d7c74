"""Reading what a run directory holds, tolerating missing or broken pieces (each becomes a note)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drsl.config import ConfigError, current_value
from drsl.data.classes import DEFAULT_CLASS_SET, ClassSet, load_class_set
from drsl.yaml_io import load_yaml

#: Readable names of adapt.method; self-training is named by its rounds host (class-balanced rounds).
METHOD_NAMES = {"source_only": "source-only", "self_training": "CBST", "drsl": "DRSL"}


def is_number(value: Any) -> bool:
    """True for a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class RoundQuality:
    """One pseudo-label round: manifest settings and, when truth was available, quality."""

    index: int
    portion: float | None
    fusion: str | None
    num_images: int | None
    #: Kept over predicted pixels (from the manifest).
    kept_fraction: float | None
    #: Quality against held-back truth (quality.json); None when not measured.
    precision: float | None
    coverage: float | None
    per_class_precision: list[float | None] = field(default_factory=list)


@dataclass
class RunData:
    """The pieces of one run directory; ``notes`` says what was missing or unreadable."""

    path: Path
    config: dict[str, Any]
    eval: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    rounds: list[RoundQuality]
    notes: list[str]
    #: The classes the run predicts (its classes.yaml).
    classes: ClassSet

    @property
    def name(self) -> str:
        """The config's run name, else the folder name."""
        return str(self.config.get("name") or self.path.name)

    @property
    def method(self) -> str:
        """Readable method name: "source-only", "CBST", "DRSL", "DRSL (online)", "mix" (the
        mixing host without the regulariser), "DRSL (mix)"."""
        adapt = self.config.get("adapt") or {}
        method, host = current_value("adapt.method", adapt.get("method")), adapt.get("host")
        if method is None:
            return "unknown"
        label = METHOD_NAMES.get(method, method)
        if method == "source_only" or host not in ("online", "mix"):
            return label
        return "mix" if (method, host) == ("self_training", "mix") else f"{label} ({host})"

    @property
    def iterations(self) -> int | None:
        """Iterations trained: from eval.json, else the last metrics step."""
        if self.eval and "iteration" in self.eval:
            return int(self.eval["iteration"])
        return max((int(record["step"]) for record in self.metrics), default=None)

    @property
    def init_checkpoint(self) -> Path | None:
        """The checkpoint this run started from (config key init_checkpoint), if any."""
        path = self.config.get("init_checkpoint")
        return Path(path) if path else None

    @property
    def headline(self) -> str | None:
        """The first evaluation subset key of eval.json (e.g. "19"), None when not evaluated."""
        return next(iter((self.eval or {}).get("miou", {})), None)

    @property
    def checkpoint(self) -> Path | None:
        """``checkpoints/latest.pt`` if it exists."""
        path = self.path / "checkpoints" / "latest.pt"
        return path if path.is_file() else None

    def miou(self, subset: str | None) -> float | None:
        """Final mIoU (fraction) of a subset (e.g. "19", "16", "7"), None when not evaluated."""
        return (self.eval or {}).get("miou", {}).get(subset)

    def series(self, key: str) -> list[tuple[float, float]]:
        """(step, value) of a metrics.jsonl key (finite values only), in step order."""
        points = {int(r["step"]): float(r[key]) for r in self.metrics if is_number(r.get(key))}
        return sorted(points.items())


def _read(path: Path, parse: Any, notes: list[str], missing: str) -> Any:
    """``parse(text)`` of a file; a note (and None) when it is missing or cannot be parsed."""
    if not path.is_file():
        notes.append(missing)
        return None
    try:
        return parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        notes.append(f"{path.name} is unreadable ({type(exc).__name__}: {exc})")
        return None


def _metrics(text: str) -> list[dict[str, Any]]:
    """metrics.jsonl records; a torn last line (a killed run) is dropped."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def _round_index(folder: Path) -> int:
    match = re.fullmatch(r"round_(\d+)", folder.name)
    return int(match.group(1)) if match else -1


def read_rounds(run_dir: Path, notes: list[str]) -> list[RoundQuality]:
    """Completed pseudo-label rounds (those with a manifest), in round order."""
    folders = sorted((p for p in (run_dir / "pseudo_labels").glob("round_*") if _round_index(p) >= 0), key=_round_index)
    rounds = []
    for folder in folders:
        manifest = _read(folder / "manifest.json", json.loads, [], "")
        if manifest is None:
            notes.append(f"pseudo-label {folder.name} is incomplete (no manifest.json)")
            continue
        quality = _read(folder / "quality.json", json.loads, [], "") or {}
        rounds.append(RoundQuality(
            index=int(manifest.get("round", _round_index(folder))), portion=manifest.get("portion"),
            fusion=manifest.get("fusion"), num_images=manifest.get("num_images"),
            kept_fraction=manifest.get("coverage"), precision=quality.get("precision"),
            coverage=quality.get("coverage"), per_class_precision=list(quality.get("per_class_precision", [])),
        ))
    return rounds


def read_classes(run_dir: Path, config: dict[str, Any], notes: list[str]) -> ClassSet:
    """The run's class set: classes.yaml, else the one its config names (runs older than class
    files: cityscapes19); a note says when it had to be guessed."""
    spec = str(run_dir / "classes.yaml") if (run_dir / "classes.yaml").is_file() else None
    spec = spec or str((config.get("data") or {}).get("classes") or DEFAULT_CLASS_SET)
    try:
        return load_class_set(spec)
    except ConfigError as exc:
        notes.append(f"class set unknown ({exc}); showing {DEFAULT_CLASS_SET}")
        return load_class_set(DEFAULT_CLASS_SET)


def check_run_folder(path: str | Path) -> None:
    """FileNotFoundError when ``path`` is not a folder, RunDirError when it holds no drsl run."""
    from drsl.engine.outputs import RECORD, is_run_folder
    from drsl.errors import RunDirError

    run_dir = Path(path)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist (or is not a folder)")
    if not is_run_folder(run_dir):
        raise RunDirError(
            f"{run_dir} holds no drsl run (no {RECORD}, or config.yaml with checkpoints or logs): "
            "give the work_dir of a drsl train run"
        )


def load_run(path: str | Path) -> RunData:
    """Read a run directory (see :func:`check_run_folder` for what is refused)."""
    run_dir = Path(path)
    check_run_folder(run_dir)
    notes: list[str] = []
    config = _read(run_dir / "config.yaml", load_yaml, notes, "no config.yaml (name and method unknown)")
    evaluation = _read(
        run_dir / "eval.json", json.loads, notes, "no eval.json: the run has not finished or was not evaluated"
    )
    metrics = _read(run_dir / "metrics.jsonl", _metrics, notes, "no metrics.jsonl: no training curves")
    config = config if isinstance(config, dict) else {}
    return RunData(
        run_dir, config, evaluation if isinstance(evaluation, dict) else None,
        metrics or [], read_rounds(run_dir, notes), notes, read_classes(run_dir, config, notes),
    )
