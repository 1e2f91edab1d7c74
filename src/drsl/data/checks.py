"""Dataset health checks and conversion to the folder layout (``drsl data check`` / ``convert``).

:func:`check_dataset` decodes every sample once and reports counts, problems (missing,
unreadable, size-mismatched files and unknown label values) and per-class pixel statistics, for
the classes of a class set. :func:`convert_dataset` writes a dataset as images + class-id masks
in the folder layout.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from drsl.config import DatasetConfig
from drsl.data.base import OnError, Problem, Sample, SegmentationDataset
from drsl.data.classes import ClassSet, write_class_file
from drsl.data.errors import DataError, LabelValueError
from drsl.data.labels import IGNORE_INDEX
from drsl.data.registry import build_dataset
from drsl.engine.outputs import check_output
from drsl.fileio import (
    atomic_write_bytes, atomic_write_json, atomic_write_png, atomic_write_text, require_free_folder, staged_folder,
)

log = logging.getLogger("drsl")

@dataclass
class CheckReport:
    """What :func:`check_dataset` (or :func:`convert_dataset`) found."""

    layout: str
    root: str
    split: str
    #: Names of the classes counted (the class set's, in id order).
    class_names: list[str]
    #: Images found under the root (before the list file and screening).
    num_found: int = 0
    #: Samples that passed the header checks and were decoded.
    num_samples: int = 0
    #: Samples that decoded without problems, and how many of them have labels.
    num_ok: int = 0
    num_labelled: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: Pixels per class id, and ignored pixels, over the labelled good samples.
    pixel_counts: list[int] = field(default_factory=list)
    ignore_pixels: int = 0
    #: Labelled good samples containing each class id.
    images_with_class: list[int] = field(default_factory=list)
    #: Unknown raw label value -> number of label files holding it.
    unknown_values: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pixel_counts = self.pixel_counts or [0] * len(self.class_names)
        self.images_with_class = self.images_with_class or [0] * len(self.class_names)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def class_image_fraction(self) -> list[float]:
        """Fraction of labelled good samples containing each class id."""
        return [n / self.num_labelled if self.num_labelled else 0.0 for n in self.images_with_class]

    def add_label(self, label: np.ndarray) -> np.ndarray:
        """Count one class-id label into the statistics; returns its 256-bin histogram."""
        counts = np.bincount(label.ravel(), minlength=256)
        self.num_labelled += 1
        self.ignore_pixels += int(counts[IGNORE_INDEX])
        for train_id in range(len(self.class_names)):
            self.pixel_counts[train_id] += int(counts[train_id])
            self.images_with_class[train_id] += int(counts[train_id] > 0)
        return counts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        return {
            "layout": self.layout, "root": self.root, "split": self.split, "ok": self.ok,
            "num_found": self.num_found, "num_samples": self.num_samples, "num_ok": self.num_ok,
            "num_labelled": self.num_labelled,
            "problems": [dataclasses.asdict(problem) for problem in self.problems],
            "classes": [
                {"train_id": i, "name": name, "pixels": self.pixel_counts[i],
                 "image_fraction": self.class_image_fraction[i]}
                for i, name in enumerate(self.class_names)
            ],
            "ignore_pixels": self.ignore_pixels,
            "unknown_values": {str(value): n for value, n in sorted(self.unknown_values.items())},
        }

    def to_text(self, max_problems: int = 20) -> str:
        """A readable multi-line summary."""
        split = f" (split {self.split})" if self.layout == "cityscapes" else ""
        lines = [
            f"{self.layout} dataset at {self.root}{split}",
            f"  images found: {self.num_found}, screened samples: {self.num_samples}, "
            f"good: {self.num_ok} ({self.num_labelled} labelled), problems: {len(self.problems)}",
        ]
        kinds = Counter(problem.kind for problem in self.problems)
        if kinds:
            by_kind = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
            lines.append(f"  problems by kind: {by_kind}")
        lines += [
            f"    [{p.kind}] {p.name}: {p.path}: {p.message}" for p in self.problems[:max_problems]
        ]
        if len(self.problems) > max_problems:
            lines.append(f"    ... and {len(self.problems) - max_problems} more")
        if self.unknown_values:
            values = ", ".join(f"{v} ({n} files)" for v, n in sorted(self.unknown_values.items()))
            lines.append(f"  unknown label values: {values}")
        total = sum(self.pixel_counts) + self.ignore_pixels
        if self.num_labelled and total:
            lines.append(f"  class statistics over {self.num_labelled} labels "
                         f"({100 * self.ignore_pixels / total:.1f}% of pixels ignored):")
            lines.append(f"    {'id':>3} {'class':<14} {'pixels':>12} {'share':>7} {'images':>7}")
            for i, name in enumerate(self.class_names):
                share = 100 * self.pixel_counts[i] / total
                images = 100 * self.class_image_fraction[i]
                pixels = self.pixel_counts[i]
                lines.append(f"    {i:>3} {name:<14} {pixels:>12} {share:>6.2f}% {images:>6.1f}%")
        return "\n".join(lines)


def _open(cfg: DatasetConfig, classes: ClassSet, require_labels: bool, on_error: OnError) -> SegmentationDataset:
    """The dataset of ``cfg`` at file resolution, without a transform."""
    plain = dataclasses.replace(cfg, resize=None, on_error=on_error)
    return build_dataset(plain, classes, require_labels=require_labels)


def _scan(
    dataset: SegmentationDataset, report: CheckReport, on_error: OnError
) -> Iterator[tuple[Sample, np.ndarray, np.ndarray | None]]:
    """Decode every sample into ``report``, yielding good ones with train-id label and histogram.

    The histogram (256 bins) is None for samples without labels. Broken samples become problems,
    or raise under ``on_error="fail"``.
    """
    report.num_found = dataset.num_found
    report.num_samples = len(dataset)
    report.problems.extend(dataset.problems)
    for index, sample in enumerate(dataset.samples):
        try:
            _, label = dataset.load(index)
        except DataError as exc:
            if on_error == "fail":
                raise
            kind = "unreadable"
            if isinstance(exc, LabelValueError):
                kind = "unknown_values"
                for value in exc.values:
                    report.unknown_values[value] = report.unknown_values.get(value, 0) + 1
            report.problems.append(Problem(sample.name, kind, exc.path, exc.problem))
            continue
        report.num_ok += 1
        yield sample, label, (report.add_label(label) if sample.label_path is not None else None)


def check_dataset(cfg: DatasetConfig, classes: ClassSet, require_labels: bool = True) -> CheckReport:
    """Check every file of the dataset ``cfg`` describes, counting the classes of ``classes``;
    problems are reported, never raised."""
    report = CheckReport(cfg.layout, cfg.root, cfg.split, list(classes.names))
    try:
        dataset = _open(cfg, classes, require_labels, "skip")
    except DataError as exc:
        report.problems.append(Problem("", "layout", exc.path, exc.problem))
        return report
    for _ in _scan(dataset, report, "skip"):
        pass  # the scan fills the report
    return report


#: Seconds the start-up check of the validation masks may take (:func:`check_validation_masks`).
VAL_CHECK_SECONDS = 20.0


def check_validation_masks(dataset: SegmentationDataset, seconds: float = VAL_CHECK_SECONDS) -> int:
    """Read the validation masks of ``dataset`` (not its images) before training, so that a bad
    one stops the run at once and not at its first evaluation; returns how many were checked.

    Masks are read by a few threads in a fixed random order, which spreads them over the set, for
    up to ``seconds`` (the rest are read at evaluation); the first holding values outside
    the class set's mapping, or unreadable, is a DataError naming it. Sizes were compared with the
    images' when the dataset was built.
    """
    masks = [sample.label_path for sample in dataset.samples if sample.label_path is not None]
    order = [masks[i] for i in np.random.default_rng(0).permutation(len(masks))]
    workers = min(8, os.cpu_count() or 1)

    def unknown_values(path: Path) -> list[int]:
        return dataset.codec.unknown_values(dataset.codec.read(path))

    start, checked = time.perf_counter(), 0
    with ThreadPoolExecutor(workers) as pool:
        while checked < len(order) and time.perf_counter() - start <= seconds:
            chunk = order[checked:checked + 4 * workers]
            try:
                for path, unknown in zip(chunk, pool.map(unknown_values, chunk)):
                    if unknown:
                        raise LabelValueError(path, unknown, dataset.codec.expected)
            except DataError as exc:
                problem = f"{exc.problem}; a data.val mask, checked before training (evaluation would stop on it)"
                raise DataError(exc.path, problem) from None
            checked += len(chunk)
    elapsed = time.perf_counter() - start
    if checked < len(masks):
        log.info("checked %d of %d validation masks in %.0f s (spread over the set); the others are read at "
                 "the first evaluation", checked, len(masks), elapsed)
    else:
        log.debug("checked all %d validation masks in %.1f s", checked, elapsed)
    return checked


def convert_dataset(
    cfg: DatasetConfig, classes: ClassSet, out_dir: str | Path, overwrite: bool = False
) -> CheckReport:
    """Write ``cfg``'s labelled dataset to ``out_dir`` in the folder layout, all or nothing.

    ``out_dir/images/NAME.ext`` are byte copies of the source images, ``out_dir/masks/NAME.png``
    uint8 class-id masks of ``classes``, ``class_map.yaml`` the identity map, ``classes.yaml``
    the class set and ``class_stats.json`` per-image pixel counts. Everything is built in a temporary sibling folder and renamed into place, so
    ``out_dir`` is either absent or complete. Broken samples follow ``cfg.on_error``.
    """
    out_dir = Path(out_dir)
    check_output(out_dir, [("the dataset root", cfg.root)], folder=True, whole=True)
    require_free_folder(out_dir, overwrite)
    dataset = _open(cfg, classes, True, cfg.on_error)
    report = CheckReport(cfg.layout, cfg.root, cfg.split, list(classes.names))
    per_image: dict[str, dict[str, Any]] = {}
    with staged_folder(out_dir) as tmp:
        for sample, label, counts in _scan(dataset, report, cfg.on_error):
            assert counts is not None  # every sample is labelled: require_labels=True
            image_out = tmp / "images" / f"{sample.name}{sample.image_path.suffix.lower()}"
            atomic_write_bytes(image_out, sample.image_path.read_bytes())
            atomic_write_png(tmp / "masks" / f"{sample.name}.png", label)
            per_image[sample.name] = {
                "pixels": {str(i): int(counts[i]) for i in range(classes.num_classes) if counts[i]},
                "ignore": int(counts[IGNORE_INDEX]),
            }
        identity = classes.mapping("ids").values
        atomic_write_text(tmp / "class_map.yaml", yaml.safe_dump(identity))
        write_class_file(tmp / "classes.yaml", classes)
        atomic_write_json(tmp / "class_stats.json", {
            "source": {"layout": cfg.layout, "root": cfg.root, "split": cfg.split},
            "classes": list(classes.names),
            "skipped": [dataclasses.asdict(problem) for problem in report.problems],
            "images": per_image,
        })
    return report

