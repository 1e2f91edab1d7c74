"""Two-pass, resumable pseudo-label generation that stores no float probability maps.

Layout of ``out_dir``::

    raw/run.json            what pass 1 was run with (checked when a killed run resumes)
    raw/NAME_pred.png       pass 1: argmax, uint8 (255 = pixel excluded by the caller's mask)
    raw/NAME_conf.png       pass 1: max posterior as uint16 levels round(conf * 65535)
    labels/NAME.png         pass 2: uint8 train ids, 255 where not selected
    confidence/NAME.png     pass 2, if save_confidence: the uint16 levels of pass 1
    manifest.json           written last: its presence marks a complete set

``raw/`` is deleted once the manifest is written. Every file is written atomically, so a killed run
resumes: images whose raw pair exists are re-read (:meth:`PseudoLabelWriter.add_existing`) instead
of recomputed, the histogram is rebuilt from the same stored levels, and the output is identical.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from drsl.adaptation.pseudo_labels.histogram import (
    KEEP_NOTHING,
    LEVELS,
    SCALE,
    ArrayLike,
    ClassConfidenceHistogram,
    all_reduce_sum,
    is_distributed,
    quantize,
)
from drsl.config import PseudoLabelConfig
from drsl.data.labels import IGNORE_INDEX
from drsl.fileio import atomic_write_bytes, atomic_write_json, atomic_write_png

MANIFEST = "manifest.json"
RAW_DIR = "raw"
LABEL_DIR = "labels"
CONFIDENCE_DIR = "confidence"
FORMAT = "drsl.pseudo_labels/1"


def check_name(name: str) -> str:
    """Return ``name`` if it is a relative '/'-separated path that stays inside the out folder."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"image name must be a non-empty string, got {name!r}")
    if "\\" in name or "\0" in name or PureWindowsPath(name).drive:
        raise ValueError(f"image name {name!r} holds a backslash, NUL or drive")
    parts = name.split("/")
    if PurePosixPath(name).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"image name {name!r} is absolute or has an empty, '.' or '..' part")
    return name


def is_complete(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a completed pseudo-label set (its manifest exists)."""
    return (Path(out_dir) / MANIFEST).is_file()


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a completed set."""
    return json.loads((Path(out_dir) / MANIFEST).read_text())


def _decode_png(data: bytes, dtype: type[np.integer]) -> np.ndarray:
    """A single-channel PNG as a ``dtype`` array (older Pillow reads 16-bit PNGs as int32)."""
    array = np.asarray(Image.open(io.BytesIO(data)))
    info = np.iinfo(dtype)
    if array.ndim != 2 or array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"expected a single-channel {np.dtype(dtype).name} PNG")
    return array.astype(dtype, copy=False)


def _created() -> str:
    """UTC creation time; SOURCE_DATE_EPOCH (reproducible builds) fixes it for identical output."""
    stamp = float(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _remove_temporaries(folder: Path) -> None:
    """Delete temporary files an atomic write left behind when a process was killed."""
    for path in folder.rglob(".*.tmp"):
        path.unlink(missing_ok=True)


class PseudoLabelWriter:
    """Writes one round's class-balanced pseudo-labels in two passes (see the module docstring).

    Use: for each target image, ``add_existing(name)`` if ``done(name)`` else ``add(name, probs)``;
    then ``finalize(portion)``. Under torch.distributed each rank adds its own images to the same
    ``out_dir``; ``finalize`` sums histograms and counts over ranks and rank 0 writes the manifest.
    """

    def __init__(
        self,
        out_dir: str | Path,
        num_classes: int,
        round_index: int,
        checkpoint: str,
        extra: dict[str, Any] | None = None,
        *,
        class_names: Sequence[str] | None = None,
        fusion: str = "none",
        save_confidence: bool = True,
        bins: int = LEVELS,
        overwrite: bool = False,
    ) -> None:
        if not 1 <= num_classes < IGNORE_INDEX:
            raise ValueError(f"num_classes must be in 1..{IGNORE_INDEX - 1}, got {num_classes}")
        if class_names is None:
            class_names = [f"class_{i}" for i in range(num_classes)]
        if len(class_names) != num_classes or len(set(class_names)) != num_classes:
            raise ValueError(f"need {num_classes} distinct class names, got {list(class_names)}")
        self.out_dir = Path(out_dir)
        self.num_classes = num_classes
        self.round_index = round_index
        self.checkpoint = checkpoint
        self.extra = dict(extra or {})
        json.dumps(self.extra)  # fail now, not after pass 1, if extra is not JSON
        self.class_names = list(class_names)
        self.fusion = fusion
        self.save_confidence = save_confidence
        self.histogram = ClassConfidenceHistogram(num_classes, bins)
        self._names: set[str] = set()
        if overwrite:
            (self.out_dir / MANIFEST).unlink(missing_ok=True)
            for folder in (RAW_DIR, LABEL_DIR, CONFIDENCE_DIR):
                shutil.rmtree(self.out_dir / folder, ignore_errors=True)
        elif is_complete(self.out_dir):
            raise FileExistsError(
                f"{self.out_dir} already holds a complete pseudo-label set; read it with "
                "read_manifest() or pass overwrite=True"
            )
        self._check_run_file()

    @classmethod
    def from_config(
        cls,
        out_dir: str | Path,
        config: PseudoLabelConfig,
        num_classes: int,
        round_index: int,
        checkpoint: str,
        extra: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> PseudoLabelWriter:
        """A writer taking ``fusion`` and ``save_confidence`` from the config."""
        return cls(
            out_dir, num_classes, round_index, checkpoint, extra,
            fusion=config.fusion, save_confidence=config.save_confidence, **kwargs,
        )

    def _check_run_file(self) -> None:
        """Record pass-1 settings, or refuse to resume raw files made with other settings."""
        run = {
            "num_classes": self.num_classes,
            "round": self.round_index,
            "checkpoint": self.checkpoint,
            "fusion": self.fusion,
            "bins": self.histogram.bins,
        }
        path = self.out_dir / RAW_DIR / "run.json"
        if path.is_file():
            previous = json.loads(path.read_text())
            if previous != run:
                raise ValueError(
                    f"{path.parent} was written with {previous}, not {run}: delete it, use "
                    "another folder or pass overwrite=True"
                )
        else:
            atomic_write_json(path, run)

    def _raw(self, name: str, kind: str) -> Path:
        return self.out_dir / RAW_DIR / f"{name}_{kind}.png"

    def _check_new(self, name: str) -> None:
        check_name(name)
        if name in self._names:
            raise ValueError(f"image {name!r} was already added")

    def done(self, name: str) -> bool:
        """Whether pass 1 already stored ``name`` (both raw files exist)."""
        check_name(name)
        return self._raw(name, "pred").is_file() and self._raw(name, "conf").is_file()

    def add(self, name: str, probs: ArrayLike, valid_mask: ArrayLike | None = None) -> None:
        """Pass 1 for one image: class posteriors (C, H, W) at label resolution, already fused.

        Pixels where ``valid_mask`` is False (for example where fused heads disagree) are never
        selected and do not count in the histogram.
        """
        probs = torch.as_tensor(probs)
        if probs.dim() != 3 or probs.shape[0] != self.num_classes:
            raise ValueError(
                f"probs must be ({self.num_classes}, H, W), got shape {tuple(probs.shape)}"
            )
        self._check_new(name)
        confidence, predicted = probs.detach().max(dim=0)
        levels = quantize(confidence)
        pred = predicted.cpu().numpy().astype(np.uint8)
        if valid_mask is not None:
            valid = torch.as_tensor(valid_mask).cpu().numpy().astype(bool)
            if valid.shape != pred.shape:
                raise ValueError(f"valid_mask shape {valid.shape}, expected {pred.shape}")
            pred[~valid] = IGNORE_INDEX
        atomic_write_png(self._raw(name, "conf"), levels)
        atomic_write_png(self._raw(name, "pred"), pred)
        self.histogram.update_levels(levels, pred, pred != IGNORE_INDEX)
        self._names.add(name)

    def add_existing(self, name: str) -> None:
        """Pass 1 for an image stored by an earlier (killed) run: re-read it into the histogram."""
        self._check_new(name)
        pred, levels, _ = self._read_raw(name)
        self.histogram.update_levels(levels, pred, pred != IGNORE_INDEX)
        self._names.add(name)

    def _read_raw(self, name: str) -> tuple[np.ndarray, np.ndarray, bytes]:
        """Predicted classes, confidence levels and the confidence PNG bytes of one image."""
        pred = _decode_png(self._raw(name, "pred").read_bytes(), np.uint8)
        conf_bytes = self._raw(name, "conf").read_bytes()
        levels = _decode_png(conf_bytes, np.uint16)
        if pred.shape != levels.shape:
            raise ValueError(f"raw files of {name!r} differ in size: {pred.shape}, {levels.shape}")
        if pred[pred != IGNORE_INDEX].max(initial=0) >= self.num_classes:
            raise ValueError(f"raw prediction of {name!r} holds classes >= {self.num_classes}")
        return pred, levels, conf_bytes

    def finalize(self, portion: float) -> dict[str, Any]:
        """Pass 2: threshold every added image, write labels and the manifest, delete ``raw/``."""
        distributed = is_distributed()
        lead = not distributed or dist.get_rank() == 0
        if lead:
            for folder in (LABEL_DIR, CONFIDENCE_DIR):
                _remove_temporaries(self.out_dir / folder)
        self.histogram.all_reduce()  # also keeps other ranks from writing before that cleanup
        thresholds = self.histogram.thresholds(portion)
        # 256-entry table: threshold per predicted value, 255 (excluded) never reaches its entry.
        table = np.full(256, KEEP_NOTHING, dtype=np.int64)
        table[: self.num_classes] = thresholds
        counts = np.zeros((2, self.num_classes), dtype=np.int64)  # predicted, kept
        for name in sorted(self._names):
            pred, levels, conf_bytes = self._read_raw(name)
            label = np.where(levels >= table[pred], pred, IGNORE_INDEX).astype(np.uint8)
            counts[0] += np.bincount(pred.ravel(), minlength=256)[: self.num_classes]
            counts[1] += np.bincount(label.ravel(), minlength=256)[: self.num_classes]
            atomic_write_png(self.out_dir / LABEL_DIR / f"{name}.png", label)
            if self.save_confidence:
                atomic_write_bytes(self.out_dir / CONFIDENCE_DIR / f"{name}.png", conf_bytes)
        names = list(self._names)
        if distributed:
            counts = all_reduce_sum(counts)
            gathered: list[list[str]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, names)
            names = [name for part in gathered for name in part]
        if not np.array_equal(counts[0], self.histogram.totals()):
            raise RuntimeError("raw files changed between pass 1 and pass 2")
        manifest = self._manifest(portion, thresholds, counts, sorted(names))
        if lead:
            atomic_write_json(self.out_dir / MANIFEST, manifest)
        if distributed:
            dist.barrier()
        if lead:
            shutil.rmtree(self.out_dir / RAW_DIR, ignore_errors=True)
        return manifest

    def _manifest(
        self, portion: float, thresholds: np.ndarray, counts: np.ndarray, names: list[str]
    ) -> dict[str, Any]:
        predicted, kept = int(counts[0].sum()), int(counts[1].sum())
        return {
            "format": FORMAT,
            "round": self.round_index,
            "portion": portion,
            "checkpoint": self.checkpoint,
            "fusion": self.fusion,
            "num_classes": self.num_classes,
            "num_images": len(names),
            "ignore_index": IGNORE_INDEX,
            "confidence_scale": SCALE,
            "histogram_bins": self.histogram.bins,
            "thresholds": {
                cls: {"confidence": None if t == KEEP_NOTHING else int(t) / SCALE, "level": int(t)}
                for cls, t in zip(self.class_names, thresholds)
            },
            "counts": {
                cls: {"predicted": int(p), "kept": int(k)}
                for cls, p, k in zip(self.class_names, counts[0], counts[1])
            },
            "coverage": kept / predicted if predicted else None,
            "labels": LABEL_DIR,
            "confidence": CONFIDENCE_DIR if self.save_confidence else None,
            "images": names,
            "extra": self.extra,
            "created": _created(),
        }
