"""Streaming per-class confidence histograms and the class-balanced (CBST) threshold rule.

Confidences are quantised once, to uint16 levels ``q = round(conf * 65535)`` (round half to even,
computed exactly in float64). The same levels are what the pseudo-label writer stores on disk, so a
threshold compared with stored confidences selects exactly the pixels the histogram counted.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

ArrayLike = torch.Tensor | np.ndarray

#: Number of confidence levels (uint16) and the scale that maps confidence 1.0 to the top level.
LEVELS = 65536
SCALE = LEVELS - 1
#: Threshold level of a class that keeps nothing (no predicted pixels, or portion 0).
KEEP_NOTHING = LEVELS
#: Portions are resolved to this many parts (1e-9), so 0.1 * 10 keeps 1 pixel, not 2.
_PORTION_PARTS = 10**9


def quantize(confidence: ArrayLike) -> np.ndarray:
    """Confidences in [0, 1] (any float dtype, any device) as uint16 levels on the CPU."""
    conf = torch.as_tensor(confidence)
    if not conf.is_floating_point():
        raise TypeError(f"confidences must be floating point, got {conf.dtype}")
    levels = (conf.detach().to(torch.float64) * SCALE).round_()
    if torch.isnan(levels).any():
        raise ValueError("confidences contain NaN")
    return levels.clamp_(0, SCALE).to(torch.int32).cpu().numpy().astype(np.uint16)


def keep_count(portion: float, total: int) -> int:
    """How many of ``total`` pixels the rule keeps: ceil(portion * total), portion to 1e-9."""
    if not 0.0 <= portion <= 1.0:
        raise ValueError(f"portion must be in [0, 1], got {portion}")
    parts = round(portion * _PORTION_PARTS)
    return -(-parts * int(total) // _PORTION_PARTS)


def is_distributed() -> bool:
    """Whether a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(array: np.ndarray) -> np.ndarray:
    """An int64 array summed over torch.distributed ranks (on the GPU for NCCL)."""
    tensor = torch.from_numpy(array.copy())
    if dist.get_backend() == dist.Backend.NCCL:
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def _to_numpy(array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


class ClassConfidenceHistogram:
    """Per-class histograms of the confidence of the pixels predicted as each class.

    Memory is ``num_classes * bins`` int64 counters whatever the amount of data. ``bins`` must be a
    power of two up to 65536; with fewer bins, bin ``b`` holds levels ``b * 65536 / bins`` onwards
    and thresholds fall on bin starts (the rule is then exact only at bin resolution).
    """

    def __init__(self, num_classes: int, bins: int = LEVELS) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if bins < 2 or bins > LEVELS or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two in 2..{LEVELS}, got {bins}")
        self.num_classes = num_classes
        self.bins = bins
        self._shift = (LEVELS // bins).bit_length() - 1
        self.counts = np.zeros((num_classes, bins), dtype=np.int64)

    def update(
        self, confidence: ArrayLike, predicted: ArrayLike, valid_mask: ArrayLike | None = None
    ) -> None:
        """Count float confidences in [0, 1] of pixels whose predicted class is ``predicted``."""
        self.update_levels(quantize(confidence), predicted, valid_mask)

    def update_levels(
        self, levels: ArrayLike, predicted: ArrayLike, valid_mask: ArrayLike | None = None
    ) -> None:
        """Count already quantised uint16 confidence levels (as stored on disk)."""
        levels = _to_numpy(levels)
        predicted = _to_numpy(predicted)
        if levels.dtype != np.uint16:
            raise TypeError(f"confidence levels must be uint16, got {levels.dtype}")
        if levels.shape != predicted.shape:
            raise ValueError(f"shape mismatch: levels {levels.shape}, predicted {predicted.shape}")
        if valid_mask is not None:
            valid_mask = _to_numpy(valid_mask).astype(bool, copy=False)
            levels, predicted = levels[valid_mask], predicted[valid_mask]
        predicted = predicted.astype(np.int64, copy=False).ravel()
        if predicted.size and (predicted.min() < 0 or predicted.max() >= self.num_classes):
            raise ValueError(
                f"predicted classes must be in 0..{self.num_classes - 1} where valid "
                f"(got {predicted.min()}..{predicted.max()}); pass valid_mask to exclude pixels"
            )
        keys = predicted * self.bins + (levels.ravel().astype(np.int64) >> self._shift)
        flat = self.counts.reshape(-1)
        if keys.size * 4 >= flat.size:
            flat += np.bincount(keys, minlength=flat.size)
        else:
            np.add.at(flat, keys, 1)

    def merge(self, other: ClassConfidenceHistogram) -> None:
        """Add the counts of another histogram of the same shape (for example another shard)."""
        if other.counts.shape != self.counts.shape:
            raise ValueError(f"cannot merge shape {other.counts.shape} into {self.counts.shape}")
        self.counts += other.counts

    def all_reduce(self) -> None:
        """Sum the counts over all torch.distributed ranks; a no-op when not initialised."""
        if is_distributed():
            self.counts = all_reduce_sum(self.counts)

    def totals(self) -> np.ndarray:
        """Predicted pixels counted per class, shape (num_classes,)."""
        return self.counts.sum(axis=1)

    def thresholds(self, portion: float) -> np.ndarray:
        """Per-class threshold levels keeping the top ``portion`` of each class's pixels.

        For class c with N_c pixels: the largest level t such that at least ceil(portion * N_c)
        pixels have level >= t (ties at t are kept). A class that keeps nothing (no pixels, or
        portion 0) gets ``KEEP_NOTHING`` = 65536, which no uint16 level reaches; hence the int64
        dtype. Keep a pixel of predicted class c when its level >= thresholds[c].
        """
        need = np.array([keep_count(portion, n) for n in self.totals()], dtype=np.int64)
        # at_least[c, b] = pixels of class c in bins >= b, with a final column of zeros.
        at_least = np.zeros((self.num_classes, self.bins + 1), dtype=np.int64)
        at_least[:, :-1] = np.cumsum(self.counts[:, ::-1], axis=1)[:, ::-1]
        last_bin = (at_least >= need[:, None]).sum(axis=1) - 1
        return last_bin << self._shift

    def state_dict(self) -> dict[str, object]:
        """Counts as a tensor (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "num_classes": self.num_classes,
            "bins": self.bins,
            "counts": torch.from_numpy(self.counts.copy()),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore counts saved by :meth:`state_dict` for the same classes and bins."""
        if (state["num_classes"], state["bins"]) != (self.num_classes, self.bins):
            raise ValueError(
                f"histogram state for {state['num_classes']} classes x {state['bins']} bins, "
                f"expected {self.num_classes} x {self.bins}"
            )
        counts = _to_numpy(state["counts"]).astype(np.int64)
        if counts.shape != self.counts.shape:
            raise ValueError(f"counts of shape {counts.shape}, expected {self.counts.shape}")
        self.counts = counts.copy()
