"""Checkpoints: everything a run needs to continue bit-for-bit, written atomically, read safely.

A training checkpoint holds the model (segmentor plus any regulariser and EMA teacher), optimizer,
scheduler, gradient scaler, iteration, RNG states and the resolved config. Files are written to a
temporary name and renamed, so a crash never leaves a half-written ``latest.pt``; they are read
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from drsl.errors import CheckpointError, first_line, shorten
from drsl.fileio import atomic_write_bytes, not_a_file

LATEST = "latest.pt"
_ITER_NAME = re.compile(r"^iter_(\d+)\.pt$")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` (tensors, numbers, strings, nested dicts/lists) atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_failure(path: str | Path, exc: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words; never torch's advice to load
    with ``weights_only=False``, which would run whatever code a foreign file carries."""
    text = str(exc)
    if Path(path).stat().st_size == 0:
        return "the file is empty (0 bytes: an interrupted copy or save?)"
    if isinstance(exc, EOFError) or "failed finding central directory" in text:
        return "the file is truncated or corrupt (an interrupted copy or save?)"
    if code := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
        return (f"the file holds pickled Python code ({code.group(1)}), which drsl never runs: checkpoints "
                "are read as tensors and plain data only")
    if isinstance(exc, (pickle.UnpicklingError, KeyError, ValueError)) or "zip archive" in text:
        return "not a PyTorch checkpoint (unrecognised content)"
    return f"unreadable ({first_line(exc)})"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint without unpickling arbitrary objects."""
    path = Path(path)
    if (reason := not_a_file(path, "checkpoint file")) is not None:
        raise CheckpointError(f"checkpoint {path} {reason}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {load_failure(path, exc)}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a drsl checkpoint (no 'model' entry)")
    check_entries(state, path)
    return state


#: Entries of a checkpoint that drsl reads, and the type each must have when present.
_ENTRY_TYPES: dict[str, tuple[type, str]] = {
    "config": (dict, "a mapping of config sections (model, data, ...)"),
    "classes": (dict, "a class set mapping (name, classes, subsets, mappings)"),
    "optimizer": (dict, "an optimizer state dict"),
    "scheduler": (dict, "a scheduler state dict"),
    "scaler": (dict, "a gradient scaler state dict"),
    "rng": (dict, "a mapping of RNG states"),
    "host": (dict, "a mapping of the self-training host's state"),
    "iteration": (int, "a whole number of iterations"),
    "metrics_records": (int, "a whole number of log records"),
}


def check_entries(state: dict[str, Any], path: str | Path) -> None:
    """A CheckpointError naming the file, the entry and what was expected, for any entry drsl
    reads that has the wrong structure (``model`` must map parameter names to tensors)."""
    model = state["model"]
    if not isinstance(model, dict):
        raise CheckpointError(
            f"{path}: entry 'model' must be a state dict (parameter names -> tensors), got {type(model).__name__}"
        )
    for key, value in model.items():  # modules may keep non-tensor "_extra_state" entries
        if not isinstance(key, str) or not (isinstance(value, torch.Tensor) or key.endswith("_extra_state")):
            raise CheckpointError(
                f"{path}: entry 'model' must map parameter names to tensors, but {shorten(key)} holds "
                f"{type(value).__name__}"
            )
    for entry, (kind, expected) in _ENTRY_TYPES.items():
        value = state.get(entry)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise CheckpointError(f"{path}: entry {entry!r} must be {expected}, got {type(value).__name__} ({shorten(value)})")
    for section in ("model", "data"):
        value = (state.get("config") or {}).get(section)
        if value is not None and not isinstance(value, dict):
            raise CheckpointError(f"{path}: entry 'config' has a {section!r} section that is not a mapping ({shorten(value)})")
    rng = state.get("rng")
    if rng is not None and not (isinstance(rng.get("torch"), torch.Tensor) and rng["torch"].dtype == torch.uint8):
        raise CheckpointError(f"{path}: entry 'rng' holds no torch RNG state ('torch': a byte tensor)")


def rng_state() -> dict[str, Any]:
    """The torch RNG states of this process (CPU and, if present, CUDA)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest ``iter_N.pt`` files in ``folder``."""
    numbered = sorted(
        (int(m.group(1)), p) for p in folder.glob("iter_*.pt") if (m := _ITER_NAME.match(p.name))
    )
    for _, path in numbered[:-keep] if keep > 0 else numbered:
        path.unlink(missing_ok=True)
