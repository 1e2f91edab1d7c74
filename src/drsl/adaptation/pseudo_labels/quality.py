"""Pseudo-label quality against ground truth: precision and coverage, overall and per class."""

from __future__ import annotations

import numpy as np
import torch

from drsl.adaptation.pseudo_labels.histogram import all_reduce_sum, is_distributed
from drsl.data.labels import IGNORE_INDEX


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


class PseudoLabelQuality:
    """Accumulates pseudo-label quality over images.

    Only pixels with valid truth (0..num_classes-1) count. Precision: kept pixels whose pseudo-label
    equals the truth over kept pixels. Coverage: kept pixels over valid pixels. Per class c:
    precision over the pixels pseudo-labelled c, coverage over the pixels whose truth is c.
    Undefined ratios are NaN.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        #: confusion[truth, pseudo] over kept pixels with valid truth.
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        #: valid[truth] = pixels of each truth class.
        self.valid = np.zeros(num_classes, dtype=np.int64)

    def update(self, pseudo: np.ndarray, truth: np.ndarray) -> None:
        """Add one image (or batch): pseudo-labels (ignore = 255) and truth of the same shape."""
        pseudo, truth = np.asarray(pseudo), np.asarray(truth)
        if pseudo.shape != truth.shape:
            raise ValueError(f"shape mismatch: pseudo {pseudo.shape}, truth {truth.shape}")
        n = self.num_classes
        bad = ((pseudo >= n) & (pseudo != IGNORE_INDEX)) | (pseudo < 0)
        if bad.any():
            raise ValueError(f"pseudo-labels hold values outside 0..{n - 1} and {IGNORE_INDEX}")
        valid = (truth >= 0) & (truth < n)
        truth_valid = truth[valid].astype(np.int64)
        self.valid += np.bincount(truth_valid, minlength=n)
        kept = valid & (pseudo < n)
        keys = truth[kept].astype(np.int64) * n + pseudo[kept].astype(np.int64)
        self.confusion += np.bincount(keys, minlength=n * n).reshape(n, n)

    def all_reduce(self) -> None:
        """Sum the counts over all torch.distributed ranks; a no-op when not initialised."""
        if is_distributed():
            self.confusion = all_reduce_sum(torch.from_numpy(self.confusion)).cpu().numpy()
            self.valid = all_reduce_sum(torch.from_numpy(self.valid)).cpu().numpy()

    def result(self) -> dict[str, float | int | list[float]]:
        """Overall and per-class precision and coverage, and the pixel counts behind them."""
        correct = np.diag(self.confusion)
        kept = int(self.confusion.sum())
        valid = int(self.valid.sum())
        return {
            "precision": float(_ratio(correct.sum(), np.int64(kept))),
            "coverage": float(_ratio(np.int64(kept), np.int64(valid))),
            "per_class_precision": _ratio(correct, self.confusion.sum(axis=0)).tolist(),
            "per_class_coverage": _ratio(self.confusion.sum(axis=1), self.valid).tolist(),
            "kept": kept,
            "valid": valid,
        }


def pseudo_label_quality(
    pseudo: np.ndarray, truth: np.ndarray, num_classes: int
) -> dict[str, float | int | list[float]]:
    """Quality of one set of pseudo-labels (see :class:`PseudoLabelQuality`)."""
    quality = PseudoLabelQuality(num_classes)
    quality.update(pseudo, truth)
    return quality.result()
