"""One-pass, resumable pseudo-label sets: every image's maps are written once, thresholds at the end.

Layout of ``out_dir``::

    run.json                  the fingerprint of what makes the maps (checked before anything is reused)
    pred/NAME.png             uint8 predicted class, 255 where a fusion rule vetoed the pixel
    score/NAME.png            uint16 confidence levels round(1024 * -log(1 - p)) (see .histogram)
    second/NAME.png           uint8 runner-up class (the second largest posterior)
    second_score/NAME.png     uint16 its levels, as the score's
    manifest.json             written last: per-class threshold levels, counts; marks a complete set
    quality.json              precision and coverage against held-back truth, when the data has it

The per-class thresholds are CRST's (``kc_parameters``): the floor(portion * N_c)-th largest level
of the N_c pixels predicted as c, from streaming histograms. The pseudo-label of a pixel is CRST's
(``label_selection``): the class c maximising p_c / t_c, kept where that ratio is at least 1, with
p from the stored levels and t the thresholds' confidences (:func:`select_labels`). Only the top
two classes of a pixel are stored: that is CRST's rule wherever no third class clears its
threshold, which needs a threshold below 1/3. Thresholds need every image's histogram, so they are
applied when a label is read rather than by rewriting every file: one model pass, one write per
map, and a new portion needs no new pass; the kept counts and quality of a set are counted from the
stored maps once its thresholds are known. PNGs are encoded on a thread pool and renamed into place
without a per-file fsync; one ``os.sync`` precedes the manifest, so a manifest never names unsynced
files.

A killed pass resumes: maps already on disk are re-read into the histograms
(:meth:`PseudoLabelWriter.add_existing`) instead of recomputed, and the result is identical. Maps
made by another checkpoint or other settings (another fingerprint) are never reused: the writer
deletes them when told to ``replace``, else refuses.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from drsl.adaptation.pseudo_labels.histogram import (
    KEEP_NOTHING,
    LEVELS,
    LEVELS_PER_NAT,
    ArrayLike,
    ClassConfidenceHistogram,
    all_reduce_sum,
    is_distributed,
    level_confidence,
)
from drsl.adaptation.pseudo_labels.quality import PseudoLabelQuality
from drsl.data.labels import IGNORE_INDEX
from drsl.fileio import atomic_write_bytes, atomic_write_json, remove_temporary_files

RUN_FILE = "run.json"
MANIFEST = "manifest.json"
QUALITY = "quality.json"
PRED_DIR = "pred"
SCORE_DIR = "score"
SECOND_DIR = "second"
SECOND_SCORE_DIR = "second_score"
MAP_DIRS = (PRED_DIR, SCORE_DIR, SECOND_DIR, SECOND_SCORE_DIR)
FORMAT = "drsl.pseudo_labels/3"
#: Pending PNG writes per encoding thread before ``add`` waits (bounds host memory).
_QUEUE_PER_THREAD = 4


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


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object, or None when the file is missing or unreadable (a torn or foreign file)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def complete_set(out_dir: str | Path, fingerprint: str, portion: float) -> dict[str, Any] | None:
    """The manifest of a complete set made with ``fingerprint`` at ``portion``, else None."""
    manifest = _read_json(Path(out_dir) / MANIFEST)
    if manifest and manifest.get("fingerprint") == fingerprint and manifest.get("portion") == portion:
        return manifest
    return None


def _decode_png(data: bytes, dtype: type[np.integer]) -> np.ndarray:
    """A single-channel PNG as a ``dtype`` array (older Pillow reads 16-bit PNGs as int32)."""
    array = np.array(Image.open(io.BytesIO(data)))
    info = np.iinfo(dtype)
    if array.ndim != 2 or array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"expected a single-channel {np.dtype(dtype).name} PNG")
    return array.astype(dtype, copy=False)


def _encode_png(path: Path, array: np.ndarray) -> None:
    """Write a single-channel PNG atomically, without fsync (the set is synced once at the end).

    OpenCV's encoder at zlib level 1: about twice as fast as Pillow's default for label maps,
    files some 8% larger; it releases the GIL, so the encoding threads run beside the model.
    """
    ok, encoded = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    atomic_write_bytes(path, encoded.tobytes(), sync=False)


def _created() -> str:
    """UTC creation time; SOURCE_DATE_EPOCH (reproducible builds) fixes it for identical output."""
    stamp = float(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def map_paths(out_dir: str | Path, name: str) -> tuple[Path, ...]:
    """The PNGs of image ``name``: prediction, score, runner-up class and its score."""
    check_name(name)
    return tuple(Path(out_dir) / folder / f"{name}.png" for folder in MAP_DIRS)


def read_maps(out_dir: str | Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The stored maps of image ``name``: pred uint8, levels uint16, runner-up uint8, its levels uint16."""
    pred_path, score_path, second_path, second_score_path = map_paths(out_dir, name)
    maps = (
        _decode_png(pred_path.read_bytes(), np.uint8), _decode_png(score_path.read_bytes(), np.uint16),
        _decode_png(second_path.read_bytes(), np.uint8), _decode_png(second_score_path.read_bytes(), np.uint16),
    )
    if len({m.shape for m in maps}) != 1:
        raise ValueError(f"maps of {name!r} in {out_dir} differ in size: {[m.shape for m in maps]}")
    return maps


def level_table(levels: Sequence[int] | np.ndarray) -> np.ndarray:
    """A 256-entry table: the threshold level of each class value (255 and unused: keep none)."""
    table = np.full(256, KEEP_NOTHING, dtype=np.int64)
    table[: len(levels)] = levels
    return table


def threshold_table(manifest: dict[str, Any]) -> np.ndarray:
    """The :func:`level_table` of a complete set's thresholds."""
    return level_table([t["level"] for t in manifest["thresholds"].values()])


def select_labels(
    pred: np.ndarray, levels: np.ndarray, second: np.ndarray, second_levels: np.ndarray, table: np.ndarray,
) -> np.ndarray:
    """uint8 pseudo-labels by CRST's rule over the top two classes: of ``pred`` and ``second``, the
    class with the larger p / t (the lower class id on a tie), kept where that ratio is >= 1, else
    255. p = 1 - exp(-level / 1024) of the stored levels, t the same of ``table`` (a class keeping
    nothing is never chosen); vetoed pixels (``pred`` 255) stay 255."""
    def confidence(level: np.ndarray) -> np.ndarray:
        return -np.expm1(-np.asarray(level, dtype=np.float64) / LEVELS_PER_NAT)

    threshold = np.where(table < KEEP_NOTHING, confidence(np.minimum(table, LEVELS - 1)), np.inf)
    ratio = confidence(levels) / threshold[pred]
    second_ratio = confidence(second_levels) / threshold[second]
    use_second = (second_ratio > ratio) | ((second_ratio == ratio) & (second < pred))
    label = np.where(use_second, second, pred)
    keep = (pred != IGNORE_INDEX) & (np.maximum(ratio, second_ratio) >= 1.0)
    return np.where(keep, label, IGNORE_INDEX).astype(np.uint8)


def load_pseudo_label(out_dir: str | Path, name: str, table: np.ndarray | None = None) -> np.ndarray:
    """The uint8 pseudo-label of ``name`` in a complete set (``table``: :func:`threshold_table`)."""
    if table is None:
        table = threshold_table(read_manifest(out_dir))
    return select_labels(*read_maps(out_dir, name), table)


class PseudoLabelWriter:
    """Writes one pseudo-label set in one pass (see the module docstring).

    Use: for each batch of images, ``add_existing(name)`` for those ``done(name)``, else
    ``add(names, pred, levels)`` with the maps on any device; then ``finalize(portion)``. Under
    torch.distributed each rank adds its own images to the same ``out_dir``; ``finalize`` sums
    histograms over ranks and rank 0 writes the manifest.

    ``fingerprint`` identifies what made the maps (checkpoint weights and settings). A folder whose
    ``run.json`` names another fingerprint is cleared when ``replace`` is True and refused
    otherwise. ``info`` is recorded in the manifest (round, checkpoint, fusion, ...).
    """

    def __init__(
        self,
        out_dir: str | Path,
        num_classes: int,
        fingerprint: str,
        info: dict[str, Any] | None = None,
        *,
        class_names: Sequence[str] | None = None,
        bins: int = LEVELS,
        device: torch.device | str = "cpu",
        replace: bool = False,
        encode_threads: int = 2,
    ) -> None:
        if not 1 <= num_classes < IGNORE_INDEX:
            raise ValueError(f"num_classes must be in 1..{IGNORE_INDEX - 1}, got {num_classes}")
        if class_names is None:
            class_names = [f"class_{i}" for i in range(num_classes)]
        if len(class_names) != num_classes or len(set(class_names)) != num_classes:
            raise ValueError(f"need {num_classes} distinct class names, got {list(class_names)}")
        self.out_dir = Path(out_dir)
        self.num_classes = num_classes
        self.fingerprint = fingerprint
        self.info = dict(info or {})
        json.dumps(self.info)  # fail now, not after the pass, if info is not JSON
        self.class_names = list(class_names)
        #: Pixels per (predicted class, level).
        self.histogram = ClassConfidenceHistogram(num_classes, bins, device)
        self._names: set[str] = set()
        self._pool = ThreadPoolExecutor(max(1, encode_threads), thread_name_prefix="png")
        self._pending: list[Future[None]] = []
        self._limit = _QUEUE_PER_THREAD * max(1, encode_threads)
        self._claim_folder(replace)

    def _claim_folder(self, replace: bool) -> None:
        """Record the fingerprint, or clear or refuse a folder holding maps of another one."""
        run = {"format": FORMAT, "fingerprint": self.fingerprint, "num_classes": self.num_classes,
               "bins": self.histogram.bins}
        path = self.out_dir / RUN_FILE
        previous = _read_json(path)
        stale = previous != run and any(
            (self.out_dir / entry).exists() for entry in (RUN_FILE, MANIFEST, *MAP_DIRS)
        )
        if stale and not replace:
            raise FileExistsError(
                f"{self.out_dir} holds pseudo-labels made by another checkpoint or other settings; "
                "delete it or choose another folder"
            )
        if stale:
            for entry in (MANIFEST, QUALITY, RUN_FILE):
                (self.out_dir / entry).unlink(missing_ok=True)
            for entry in MAP_DIRS:
                shutil.rmtree(self.out_dir / entry, ignore_errors=True)
        else:
            # Same maps: a complete set is finalised again (another portion), never half-read.
            for entry in (MANIFEST, QUALITY):
                (self.out_dir / entry).unlink(missing_ok=True)
        if previous != run:
            atomic_write_json(path, run)

    def done(self, name: str) -> bool:
        """Whether all maps of ``name`` are already stored (by this set's fingerprint)."""
        return all(path.is_file() for path in map_paths(self.out_dir, name))

    def _check_new(self, name: str) -> None:
        check_name(name)
        if name in self._names:
            raise ValueError(f"image {name!r} was already added")
        self._names.add(name)

    def add(
        self, names: Sequence[str], pred: ArrayLike, levels: ArrayLike, second: ArrayLike, second_levels: ArrayLike,
    ) -> None:
        """Store a batch: ``pred`` (B, H, W) class ids (255 = vetoed), ``levels`` (B, H, W)
        confidence levels 0..65535, ``second`` and ``second_levels`` the runner-up's."""
        device = self.histogram.counts.device
        maps = [torch.as_tensor(m).to(device) for m in (pred, levels, second, second_levels)]
        if maps[0].dim() != 3 or maps[0].shape[0] != len(names) or any(m.shape != maps[0].shape for m in maps):
            raise ValueError(
                f"need maps of shape ({len(names)}, H, W), got {[tuple(m.shape) for m in maps]}"
            )
        for name in names:
            self._check_new(name)
        self.histogram.add_keys(self.histogram.keys(maps[1], maps[0], maps[0] != IGNORE_INDEX))
        hosts = [
            m.to(torch.uint8).cpu().numpy() if index % 2 == 0 else m.to(torch.int32).to(torch.uint16).cpu().numpy()
            for index, m in enumerate(maps)
        ]
        for index, name in enumerate(names):
            pred_path, score_path, second_path, second_score_path = map_paths(self.out_dir, name)
            # The prediction last: done() needs every map, and it is the smallest, fastest file.
            self._submit(score_path, hosts[1][index])
            self._submit(second_path, hosts[2][index])
            self._submit(second_score_path, hosts[3][index])
            self._submit(pred_path, hosts[0][index])

    def _submit(self, path: Path, array: np.ndarray) -> None:
        if len(self._pending) >= self._limit:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(_encode_png, path, array))

    def add_existing(self, name: str) -> bool:
        """Count an image stored by an earlier (killed) pass: its maps are re-read, not recomputed.

        Returns False, counting nothing, when the stored maps cannot be read (files renamed into
        place but lost by a crash before the pass's final sync): the caller computes them again.
        """
        try:
            pred, levels, second, _ = read_maps(self.out_dir, name)
        except (OSError, ValueError):
            return False
        if max(pred[pred != IGNORE_INDEX].max(initial=0), second.max(initial=0)) >= self.num_classes:
            return False
        self._check_new(name)
        device = self.histogram.counts.device
        pred_t = torch.from_numpy(pred).to(device)
        self.histogram.add_keys(self.histogram.keys(torch.from_numpy(levels).to(device), pred_t, pred_t != IGNORE_INDEX))
        return True

    def _flush(self) -> None:
        """Wait for every queued PNG, then make all of them durable at once."""
        for future in self._pending:
            future.result()
        self._pending.clear()
        self._pool.shutdown()
        os.sync()

    def finalize(self, portion: float, truth: Callable[[str], ArrayLike] | None = None) -> dict[str, Any]:
        """Thresholds from the histograms of every rank, then the kept pixels per class (and, with
        ``truth``, which gives an image's held-back labels by name, the quality) counted on the
        stored maps; rank 0 writes the quality and the manifest."""
        distributed = is_distributed()
        lead = not distributed or dist.get_rank() == 0
        self._flush()
        self.histogram.all_reduce()  # also the point after which no rank writes maps any more
        if lead:  # what a killed pass left; never earlier, when another rank's writes are in flight
            for folder in MAP_DIRS:
                remove_temporary_files(self.out_dir / folder)
        names = sorted(self._names)
        thresholds = self.histogram.thresholds(portion)
        kept, quality = self._count_labels(names, thresholds, truth)
        if distributed:
            gathered: list[list[str]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, names)
            names = sorted(name for part in gathered for name in part)
        manifest = self._manifest(portion, thresholds, kept, names)
        if lead:
            if quality is not None:
                atomic_write_json(self.out_dir / QUALITY, quality.result())
            atomic_write_json(self.out_dir / MANIFEST, manifest)
        if distributed:
            dist.barrier()
        return manifest

    def _count_labels(
        self, names: list[str], thresholds: np.ndarray, truth: Callable[[str], ArrayLike] | None,
    ) -> tuple[np.ndarray, PseudoLabelQuality | None]:
        """Kept pixels per class of this rank's stored maps under ``thresholds``, and their quality
        against ``truth``; both summed over ranks."""
        table = level_table(thresholds)
        kept = np.zeros(self.num_classes, dtype=np.int64)
        quality = PseudoLabelQuality(self.num_classes) if truth is not None else None
        for name in names:
            label = select_labels(*read_maps(self.out_dir, name), table)
            kept += np.bincount(label.ravel(), minlength=256)[: self.num_classes]
            if quality is not None:
                quality.update(label, np.asarray(truth(name)))  # type: ignore[misc]
        if is_distributed():
            kept = all_reduce_sum(torch.from_numpy(kept)).numpy()
            if quality is not None:
                quality.all_reduce()
        return kept, quality

    def _manifest(self, portion: float, thresholds: np.ndarray, kept: np.ndarray, names: list[str]) -> dict[str, Any]:
        predicted = self.histogram.totals()
        return {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "portion": portion,
            **self.info,
            "num_classes": self.num_classes,
            "num_images": len(names),
            "ignore_index": IGNORE_INDEX,
            "rule": "label = argmax of p / thresholds[class].confidence over pred and second, kept where >= 1, "
                    "else ignore_index (CRST)",
            "score": "level = round(levels_per_nat * -log(1 - p)), capped at 65535",
            "levels_per_nat": LEVELS_PER_NAT,
            "histogram_bins": self.histogram.bins,
            "thresholds": {
                cls: {"confidence": None if t == KEEP_NOTHING else level_confidence(int(t)), "level": int(t)}
                for cls, t in zip(self.class_names, thresholds)
            },
            "counts": {
                cls: {"predicted": int(p), "kept": int(k)}
                for cls, p, k in zip(self.class_names, predicted, kept)
            },
            "coverage": int(kept.sum()) / int(predicted.sum()) if predicted.sum() else None,
            "pred": PRED_DIR,
            "score_dir": SCORE_DIR,
            "second": SECOND_DIR,
            "second_score_dir": SECOND_SCORE_DIR,
            "images": names,
            "created": _created(),
        }
