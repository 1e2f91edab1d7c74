"""Write the benchmark: every image of every split in the real datasets' layouts, then the manifest.

Each image is generated from its own random stream seeded by (seed, split, index), so the files
do not depend on the number of worker processes or the order they finish in.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from drsl.engine.logging import progress as progress_bar
from drsl.engine.outputs import check_output
from drsl.fileio import atomic_write_json, atomic_write_png, require_free_folder, staged_folder

from .catalogue import CLASS_MODES, CLASSES, LABEL_MAPPING, MODE_KEYS, mode_mixes
from .render import render_flat, render_photo
from .scene import compose
from .shifts import DEFAULT_SHIFT, Shift, get_shift

GENERATOR_VERSION = 1
#: Cityscapes label id -> class id, for the class statistics of the manifest.
LABEL_TABLE = LABEL_MAPPING.table()
CITY = "synthcity"
#: split name -> (domain role, random-stream code, Cityscapes split folder or None for the GTA5 layout)
SPLITS: dict[str, tuple[str, int, str | None]] = {
    "source": ("source", 0, None),
    "target_train": ("target", 1, "train"),
    "target_val": ("target", 2, "val"),
}


def sample_paths(out: str | Path, split: str, index: int) -> tuple[Path, Path]:
    """(image, label) paths of sample ``index`` of ``split`` under the benchmark root ``out``."""
    out = Path(out)
    folder = SPLITS[split][2]
    if folder is None:
        return out / "source" / "images" / f"{index:05d}.png", out / "source" / "labels" / f"{index:05d}.png"
    stem = f"{CITY}_000000_{index:06d}"
    return (out / "target" / "leftImg8bit" / folder / CITY / f"{stem}_leftImg8bit.png",
            out / "target" / "gtFine" / folder / CITY / f"{stem}_gtFine_labelIds.png")


def render_sample(split: str, index: int, seed: int, size: tuple[int, int],
                  shift: str = DEFAULT_SHIFT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB image, Cityscapes label ids, per-pixel global mode index or -1) of one sample."""
    role, code, _ = SPLITS[split]
    domain = get_shift(shift).domain(role)
    rng = np.random.default_rng([seed, code, index])
    canvas = compose(rng, domain, size[0], size[1])
    if domain.photographic:
        image = render_photo(canvas, rng, domain.shadows)
    else:
        image = render_flat(canvas, domain.shadows)
    return image, canvas.label_map(), canvas.table("mode")[canvas.ids]


@dataclass(frozen=True)
class _Job:
    out: str
    split: str
    index: int
    seed: int
    size: tuple[int, int]
    shift: str


def _write(job: _Job) -> tuple[np.ndarray, np.ndarray]:
    """Write one sample; returns its per-class and per-mode pixel counts."""
    image, labels, modes = render_sample(job.split, job.index, job.seed, job.size, job.shift)
    image_path, label_path = sample_paths(job.out, job.split, job.index)
    atomic_write_png(image_path, image)
    atomic_write_png(label_path, labels)
    classes = np.bincount(LABEL_TABLE[labels].ravel(), minlength=256)[: CLASSES.num_classes]
    return classes, np.bincount(modes[modes >= 0], minlength=len(MODE_KEYS))


def _context() -> multiprocessing.context.BaseContext:
    """Fork on Linux (works from any script, no main guard needed), spawn elsewhere."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


@contextmanager
def _opencv_sequential() -> Iterator[None]:
    """Run OpenCV without its thread pool while workers are forked: the pool does not survive fork()."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(0)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def _class_frequency(counts: np.ndarray) -> dict[str, float]:
    total = max(int(counts.sum()), 1)
    return {name: round(float(c) / total, 6) for name, c in zip(CLASSES.names, counts)}


def _mode_share(counts: np.ndarray) -> dict[str, dict[str, float]]:
    share: dict[str, dict[str, float]] = {}
    for train_id, modes in CLASS_MODES.items():
        values = np.array([counts[k] for k, (tid, _) in enumerate(MODE_KEYS) if tid == train_id], dtype=np.float64)
        total = values.sum()
        if total > 0:
            share[CLASSES.names[train_id]] = {m.name: round(float(v / total), 4) for m, v in zip(modes, values)}
    return share


def generate_benchmark(
    out: str | Path,
    seed: int = 0,
    num_source: int = 600,
    num_target_train: int = 600,
    num_target_val: int = 150,
    source_size: tuple[int, int] = (224, 128),
    target_size: tuple[int, int] = (256, 128),
    workers: int = 1,
    progress: bool = False,
    overwrite: bool = False,
    shift: str = DEFAULT_SHIFT,
) -> dict[str, Any]:
    """Generate the street-scene benchmark under ``out`` and return its manifest.

    ``out`` must be absent or empty unless ``overwrite`` (it is then replaced). The benchmark is
    built in a temporary sibling folder and renamed into place, so ``out`` is never half-written.

    Source: ``out/source/{images,labels}/NNNNN.png`` (GTA5 layout). Target:
    ``out/target/{leftImg8bit,gtFine}/{train,val}/synthcity/...`` (Cityscapes layout). Labels are
    uint8 Cityscapes label ids. Sizes are (width, height). ``shift`` names the preset the two
    domains come from (:data:`.shifts.SHIFTS`). Same seed and shift, same bytes, any ``workers``.
    """
    preset = get_shift(shift)
    check_output(out, folder=True, whole=True)
    require_free_folder(out, overwrite)
    with staged_folder(out) as staging:
        manifest = _generate(staging, seed, num_source, num_target_train, num_target_val,
                             source_size, target_size, workers, progress, preset)
    return manifest


def _generate(
    out: Path, seed: int, num_source: int, num_target_train: int, num_target_val: int,
    source_size: tuple[int, int], target_size: tuple[int, int], workers: int, progress: bool, preset: Shift,
) -> dict[str, Any]:
    """Write every sample and the manifest under ``out``; returns the manifest."""
    counts = {"source": num_source, "target_train": num_target_train, "target_val": num_target_val}
    sizes = {"source": tuple(source_size), "target": tuple(target_size)}
    jobs = [_Job(str(out), split, i, seed, sizes[SPLITS[split][0]], preset.name) for split, n in counts.items() for i in range(n)]
    if workers > 1 and len(jobs) > 1:
        with _opencv_sequential(), ProcessPoolExecutor(workers, mp_context=_context()) as pool:
            results = pool.map(_write, jobs, chunksize=max(1, min(8, len(jobs) // (4 * workers))))
            stats = list(progress_bar(results, total=len(jobs), enabled=progress))
    else:
        stats = [_write(job) for job in progress_bar(jobs, enabled=progress)]
    class_counts = {split: np.zeros(CLASSES.num_classes, dtype=np.int64) for split in counts}
    mode_counts = {split: np.zeros(len(MODE_KEYS), dtype=np.int64) for split in counts}
    for job, (classes, modes) in zip(jobs, stats):
        class_counts[job.split] += classes
        mode_counts[job.split] += modes
    manifest: dict[str, Any] = {
        "generator": "drsl.data.synth",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "shift": preset.name,
        "shift_summary": preset.summary,
        "sizes": {domain: list(size) for domain, size in sizes.items()},
        "counts": counts,
        "layouts": {"source": "gta5", "target": "cityscapes", "city": CITY},
        "label_format": "uint8 Cityscapes label ids (0 unlabelled, 1 ego vehicle)",
        "mode_mix": mode_mixes({"source": preset.source.mix, "target": preset.target.mix}),
        "domains": {role: preset.domain(role).describe() for role in ("source", "target")},
        "class_frequency": {split: _class_frequency(c) for split, c in class_counts.items()},
        "mode_share": {split: _mode_share(c) for split, c in mode_counts.items()},
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
