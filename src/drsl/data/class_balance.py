"""Class-balanced source sampling: images holding rare classes are drawn more often.

A class c is drawn with probability ``P(c) ∝ exp((1 - f_c) / T)`` over the classes present in the
source set (``f_c`` its share of labelled pixels), then an image holding it uniformly, as in
DAFormer's rare class sampling. That makes image i's sampling weight
``w_i = sum_c P(c) [c in i] / n_c`` with ``n_c`` the number of images holding c. Counting the
labels reads every label file once; the counts are cached in the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from drsl.engine.distributed import barrier
from drsl.engine.logging import progress
from drsl.fileio import atomic_write_json

if TYPE_CHECKING:
    from drsl.config import SourceSamplingConfig
    from drsl.data.base import SegmentationDataset


def class_pixel_counts(dataset: SegmentationDataset, show_progress: bool = True) -> np.ndarray:
    """Pixels of each class in each sample's label: an int64 array [samples, classes]."""
    num_classes = dataset.classes.num_classes
    counts = np.zeros((len(dataset), num_classes), dtype=np.int64)
    for index, sample in enumerate(progress(dataset.samples, show_progress, desc="class counts")):
        if sample.label_path is not None:
            label = dataset.codec.decode(sample.label_path)
            counts[index] = np.bincount(label.ravel(), minlength=256)[:num_classes]
    return counts


def cached_class_pixel_counts(dataset: SegmentationDataset, cache: Path, is_main: bool) -> np.ndarray:
    """:func:`class_pixel_counts`, read from ``cache`` when it lists the same samples and classes.

    The main process counts and writes the cache; the others wait for it (one read of the labels).
    """
    names = [sample.name for sample in dataset.samples]

    def read() -> np.ndarray | None:
        if not cache.is_file():
            return None
        stored = json.loads(cache.read_text())
        fits = stored.get("names") == names and stored.get("classes") == list(dataset.classes.names)
        return np.array(stored["counts"], dtype=np.int64) if fits else None

    counts = read() if is_main else None
    if is_main and counts is None:
        counts = class_pixel_counts(dataset)
        atomic_write_json(cache, {"names": names, "classes": list(dataset.classes.names), "counts": counts.tolist()})
    barrier()
    if counts is None:
        counts = read()
        if counts is None:
            raise RuntimeError(f"class count cache {cache} missing or stale after the main process wrote it")
    return counts


def class_balanced_weights(counts: np.ndarray, temperature: float, min_share: float) -> np.ndarray:
    """Per-image sampling probabilities (summing to 1) from per-image class pixel counts.

    An image holds class c when c covers at least ``min_share`` of its labelled pixels. Images
    holding no class are never drawn (unless no image holds any class: then uniform).
    """
    if temperature <= 0:
        raise ValueError(f"class-balanced sampling temperature must be > 0, got {temperature}")
    totals = counts.sum(axis=1, keepdims=True)
    holds = counts >= np.maximum(min_share * totals, 1)
    images_per_class = holds.sum(axis=0)
    present = images_per_class > 0
    if not present.any():
        return np.full(len(counts), 1.0 / len(counts))
    share = counts.sum(axis=0) / max(int(counts.sum()), 1)
    logits = np.where(present, (1.0 - share) / temperature, -np.inf)
    class_probability = np.exp(logits - logits[present].max())
    class_probability /= class_probability.sum()
    per_image = holds * (class_probability / np.maximum(images_per_class, 1))
    weights = per_image.sum(axis=1)
    return weights / weights.sum()


def source_sampling_weights(
    dataset: SegmentationDataset, config: SourceSamplingConfig, cache: Path, is_main: bool
) -> np.ndarray | None:
    """The source sampling probabilities the config asks for (None: uniform permutations)."""
    if config.mode == "uniform":
        return None
    counts = cached_class_pixel_counts(dataset, cache, is_main)
    return class_balanced_weights(counts, config.temperature, config.min_share)
