"""Class-balanced source sampling: DAFormer's rare-class sampling (Hoyer et al. 2022).

Each source crop starts from a class c drawn with probability ``P(c) ∝ exp((1 - f_c) / T)`` over
the classes present in the source set (``f_c`` its share of labelled pixels), then an image holding
c, uniformly. An image holds c when c covers more than ``min_share`` of its label pixels: DAFormer
counts 3000 pixels of a 1914x1052 GTA5 label, the share keeps that rule at any resolution. The
image is cropped (the source augmentation) and, while the crop holds no more than
``min_crop_ratio * min_share`` times the label's pixel count of c, cropped afresh, up to
:data:`MAX_RECROPS` times (the last crop is kept). On GTA5 at DAFormer's settings that is its
1500 pixels per 512x512 crop. Counting the labels reads every label file once; the counts are
cached in the run directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset

from drsl.config import ConfigError
from drsl.data.digest import samples_digest
from drsl.engine.distributed import barrier
from drsl.engine.logging import progress
from drsl.engine.seeding import derived_seed
from drsl.fileio import atomic_write_json

if TYPE_CHECKING:
    from drsl.config import SourceSamplingConfig
    from drsl.data.base import SegmentationDataset
    from drsl.engine.sampling import SeededView

#: Fresh crops of a drawn image at most, when its crop holds too little of the drawn class (DAFormer).
MAX_RECROPS = 10


def class_pixel_counts(dataset: SegmentationDataset, show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of each class in each sample's label (int64 [samples, classes]) and each label's
    pixel count (int64 [samples], 0 without a label)."""
    num_classes = dataset.classes.num_classes
    counts = np.zeros((len(dataset), num_classes), dtype=np.int64)
    pixels = np.zeros(len(dataset), dtype=np.int64)
    for index, sample in enumerate(progress(dataset.samples, show_progress, desc="class counts")):
        if sample.label_path is not None:
            label = dataset.codec.decode(sample.label_path)
            counts[index] = np.bincount(label.ravel(), minlength=256)[:num_classes]
            pixels[index] = label.size
    return counts, pixels


def cached_class_pixel_counts(
    dataset: SegmentationDataset, cache: Path, is_main: bool
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`class_pixel_counts`, read from ``cache`` when it lists the same samples and classes.

    The main process counts and writes the cache; the others wait for it (one read of the labels).
    """
    names = [sample.name for sample in dataset.samples]
    files = samples_digest(dataset.samples)  # relabelled files under the same names are counted again

    def read() -> tuple[np.ndarray, np.ndarray] | None:
        try:
            stored = json.loads(cache.read_text())
            fits = (stored.get("names") == names and stored.get("files") == files
                    and stored.get("classes") == list(dataset.classes.names))
            if not fits:
                return None
            return np.array(stored["counts"], dtype=np.int64), np.array(stored["pixels"], dtype=np.int64)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None  # missing, damaged or foreign: counted again

    result = read() if is_main else None
    if is_main and result is None:
        result = class_pixel_counts(dataset)
        atomic_write_json(cache, {
            "names": names, "files": files, "classes": list(dataset.classes.names),
            "counts": result[0].tolist(), "pixels": result[1].tolist(),
        })
    barrier()
    if result is None:
        result = read()
        if result is None:
            raise RuntimeError(f"class count cache {cache} missing or stale after the main process wrote it")
    return result


@dataclass(frozen=True)
class RareClassSampling:
    """The drawable classes with their probabilities, the images holding each, and the pixels of
    the drawn class a crop of each image must exceed."""

    classes: np.ndarray
    probabilities: np.ndarray
    holders: list[np.ndarray]
    min_crop_pixels: np.ndarray
    max_recrops: int

    def draw(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``size`` draws of a class, then of an image holding it: (images, classes), int64."""
        picks = rng.choice(len(self.classes), size=size, p=self.probabilities)
        lengths = np.array([len(h) for h in self.holders])
        starts = np.cumsum(lengths) - lengths
        offsets = np.minimum((rng.random(size) * lengths[picks]).astype(np.int64), lengths[picks] - 1)
        images = np.concatenate(self.holders)[starts[picks] + offsets]
        return images.astype(np.int64), self.classes[picks].astype(np.int64)


def rare_class_sampling(counts: np.ndarray, pixels: np.ndarray, config: SourceSamplingConfig) -> RareClassSampling:
    """The sampling of ``config`` from per-image class pixel counts and label pixel counts.

    A class present in the source set that no image holds cannot be drawn (DAFormer refuses such a
    set); the others keep their relative probabilities.
    """
    holds = counts > config.min_share * pixels[:, None]
    drawable = np.flatnonzero(holds.any(axis=0) & (counts.sum(axis=0) > 0))
    if drawable.size == 0:
        raise ConfigError(
            f"data.source_sampling.min_share={config.min_share}: no source image holds any class by that share"
        )
    share = counts.sum(axis=0) / max(int(counts.sum()), 1)
    logits = (1.0 - share[drawable]) / config.temperature
    probabilities = np.exp(logits - logits.max())
    return RareClassSampling(
        classes=drawable,
        probabilities=probabilities / probabilities.sum(),
        holders=[np.flatnonzero(holds[:, c]) for c in drawable],
        min_crop_pixels=config.min_crop_ratio * config.min_share * pixels,
        max_recrops=MAX_RECROPS if config.min_crop_ratio > 0 else 0,
    )


class RareClassCrops(Dataset):
    """A source view whose keys ``(index, sample_seed, class)`` come from :meth:`RareClassSampling.draw`:
    the image is cropped under the sample's seed, then afresh (seeds derived from it) until the
    crop holds more than the image's ``min_crop_pixels`` of the class, at most ``max_recrops`` times."""

    def __init__(self, view: SeededView, sampling: RareClassSampling) -> None:
        self.view, self.sampling = view, sampling

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        index, sample_seed, cls = key
        sample = self.view.load(index)
        crop = self.view.augment(dict(sample), sample_seed)
        for attempt in range(1, self.sampling.max_recrops + 1):
            if int((crop["label"] == cls).sum()) > self.sampling.min_crop_pixels[index]:
                break
            crop = self.view.augment(dict(sample), derived_seed(sample_seed, attempt))
        return crop


def source_sampling(
    dataset: SegmentationDataset, config: SourceSamplingConfig, cache: Path, is_main: bool
) -> RareClassSampling | None:
    """The rare-class sampling the config asks for (None: uniform permutations)."""
    if config.mode == "uniform":
        return None
    return rare_class_sampling(*cached_class_pixel_counts(dataset, cache, is_main), config)
