"""Confidence scores that resolve certainty, streaming per-class histograms, the CBST threshold rule.

A pixel's confidence p (its maximum class posterior) is ranked by its score ``s = -log(1 - p)``,
computed from the posterior mass of the other classes so that it does not saturate where p rounds
to 1 in floating point (a logit margin of 30 gives s = 30, p = 1 - 1e-13). Scores are quantised
once, to uint16 levels ``q = round(s * LEVELS_PER_NAT)`` capped at 65535 (s up to 64, i.e.
1 - p down to 1.6e-28; the step in p is at most 1/1024 and shrinks with 1 - p). The same levels are
what the pseudo-label writer stores on disk, so a threshold compared with stored levels selects
exactly the pixels the histogram counted.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

ArrayLike = torch.Tensor | np.ndarray

#: Number of confidence levels (uint16) and levels per unit of the score -log(1 - p).
LEVELS = 65536
LEVELS_PER_NAT = 1024
#: Threshold level of a class that keeps nothing (no predicted pixels, or portion 0).
KEEP_NOTHING = LEVELS
#: Portions are resolved to this many parts (1e-9), so 0.1 * 10 keeps 1 pixel, not 2.
_PORTION_PARTS = 10**9


def confidence_score(confidence: ArrayLike) -> torch.Tensor:
    """``-log(1 - p)`` of plain confidences p in [0, 1] (float64; saturates where p rounds to 1).

    Prefer the scores of :func:`drsl.adaptation.posterior.fuse`, which come from the other
    classes' mass and resolve confidences near 1.
    """
    conf = torch.as_tensor(confidence)
    if not conf.is_floating_point():
        raise TypeError(f"confidences must be floating point, got {conf.dtype}")
    return torch.special.log1p(-conf.detach().to(torch.float64).clamp(0, 1)).neg()


def quantize(score: ArrayLike) -> torch.Tensor:
    """Scores ``-log(1 - p)`` (any float dtype, any device) as int32 levels 0..65535, same device."""
    score = torch.as_tensor(score)
    if not score.is_floating_point():
        raise TypeError(f"scores must be floating point, got {score.dtype}")
    if bool(torch.isnan(score).any()):
        raise ValueError("scores contain NaN")
    levels = (score.detach().to(torch.float64) * LEVELS_PER_NAT).round_()
    return levels.clamp_(0, LEVELS - 1).to(torch.int32)


def level_confidence(level: int) -> float:
    """The confidence p at which a level starts: ``1 - exp(-level / LEVELS_PER_NAT)``."""
    return float(-np.expm1(-level / LEVELS_PER_NAT))


def keep_count(portion: float, total: int) -> int:
    """How many of ``total`` pixels the rule keeps: floor(portion * total) as in CRST, portion to 1e-9."""
    if not 0.0 <= portion <= 1.0:
        raise ValueError(f"portion must be in [0, 1], got {portion}")
    parts = round(portion * _PORTION_PARTS)
    return parts * int(total) // _PORTION_PARTS


def is_distributed() -> bool:
    """Whether a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """An int64 tensor summed over torch.distributed ranks (through the GPU for NCCL)."""
    device = tensor.device
    if dist.get_backend() == dist.Backend.NCCL and device.type != "cuda":
        tensor = tensor.cuda()
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.to(device)


def _as_tensor(array: ArrayLike, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(array).to(device)


class ClassConfidenceHistogram:
    """Per-class histograms of the confidence levels of the pixels predicted as each class.

    Memory is ``num_classes * bins`` int64 counters whatever the amount of data, on ``device`` (the
    device the maps are computed on, so no map leaves it to be counted). ``bins`` must be a power
    of two up to 65536; with fewer bins, bin ``b`` holds levels ``b * 65536 / bins`` onwards and
    thresholds fall on bin starts (the rule is then exact only at bin resolution).
    """

    def __init__(self, num_classes: int, bins: int = LEVELS, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if bins < 2 or bins > LEVELS or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two in 2..{LEVELS}, got {bins}")
        self.num_classes = num_classes
        self.bins = bins
        self._shift = (LEVELS // bins).bit_length() - 1
        #: Counter index that collects excluded pixels (one past the last class's last bin).
        self.trash = num_classes * bins
        self._flat = torch.zeros(self.trash + 1, dtype=torch.int64, device=device)
        self._pending: list[torch.Tensor] = []
        self._pending_size = 0

    @property
    def counts(self) -> torch.Tensor:
        """The counters, shape (num_classes, bins)."""
        self._flush()
        return self._flat[: self.trash].view(self.num_classes, self.bins)

    def update(self, scores: ArrayLike, predicted: ArrayLike, valid_mask: ArrayLike | None = None) -> None:
        """Count float scores ``-log(1 - p)`` of pixels whose predicted class is ``predicted``."""
        self.update_levels(quantize(scores), predicted, valid_mask)

    def update_levels(
        self, levels: ArrayLike, predicted: ArrayLike, valid_mask: ArrayLike | None = None
    ) -> None:
        """Count already quantised levels (uint16 as stored on disk, or int32 from :func:`quantize`)."""
        device = self._flat.device
        valid = None if valid_mask is None else _as_tensor(valid_mask, device)
        self.add_keys(self.keys(_as_tensor(levels, device), _as_tensor(predicted, device), valid))

    def keys(self, levels: torch.Tensor, predicted: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Flat counter indices (int64) of pixels, :attr:`trash` where ``valid`` is False; checked."""
        if levels.dtype not in (torch.uint16, torch.int32):
            raise TypeError(f"confidence levels must be uint16 or int32, got {levels.dtype}")
        if levels.shape != predicted.shape or (valid is not None and valid.shape != levels.shape):
            raise ValueError(f"shape mismatch: levels {tuple(levels.shape)}, predicted {tuple(predicted.shape)}")
        predicted = predicted.reshape(-1).long()
        outside = (predicted < 0) | (predicted >= self.num_classes)
        if valid is not None:
            outside &= valid.reshape(-1).bool()
        if bool(outside.any()):
            raise ValueError(
                f"predicted classes must be in 0..{self.num_classes - 1} where valid "
                f"(got {predicted[outside].unique().tolist()[:5]}); pass valid_mask to exclude pixels"
            )
        keys = predicted * self.bins + (levels.reshape(-1).long() >> self._shift)
        return keys if valid is None else torch.where(valid.reshape(-1).bool(), keys, self.trash)

    def add_keys(self, keys: torch.Tensor) -> None:
        """Count pixels given by :meth:`keys` (on this histogram's device).

        Keys are buffered until they number a quarter of the counters, then counted by one
        ``bincount``: its sweep over every counter is then cheap per pixel, and there is no
        scatter (slow on CPUs).
        """
        self._pending.append(keys.reshape(-1))
        self._pending_size += keys.numel()
        if self._pending_size * 4 >= self._flat.numel():
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            keys = torch.cat(self._pending)
            self._pending, self._pending_size = [], 0
            if keys.device.type == "cpu":  # numpy's bincount is several times faster on CPUs
                counted = torch.from_numpy(np.bincount(keys.numpy(), minlength=self._flat.numel()))
            else:
                counted = torch.bincount(keys, minlength=self._flat.numel())
            self._flat.add_(counted)

    def merge(self, other: ClassConfidenceHistogram) -> None:
        """Add the counts of another histogram of the same shape (for example another shard)."""
        if other.counts.shape != self.counts.shape:
            raise ValueError(f"cannot merge shape {tuple(other.counts.shape)} into {tuple(self.counts.shape)}")
        self.counts.add_(other.counts.to(self._flat.device))

    def all_reduce(self) -> None:
        """Sum the counts over all torch.distributed ranks; a no-op when not initialised."""
        if is_distributed():
            self.counts.copy_(all_reduce_sum(self.counts))

    def totals(self) -> np.ndarray:
        """Predicted pixels counted per class, shape (num_classes,)."""
        return self.counts.sum(dim=1).cpu().numpy()

    def thresholds(self, portion: float) -> np.ndarray:
        """Per-class threshold levels keeping the top ``portion`` of each class's pixels.

        For class c with N_c pixels: the largest level t such that at least floor(portion * N_c)
        pixels have level >= t (ties at t are kept). A class that keeps nothing (that count is 0)
        gets ``KEEP_NOTHING`` = 65536, which no uint16 level reaches; hence the int64
        dtype. Keep a pixel of predicted class c when its level >= thresholds[c].
        """
        counts = self.counts.cpu().numpy()
        need = np.array([keep_count(portion, n) for n in counts.sum(axis=1)], dtype=np.int64)
        last_bin = (self._at_least(counts) >= need[:, None]).sum(axis=1) - 1
        return last_bin << self._shift

    @staticmethod
    def _at_least(counts: np.ndarray) -> np.ndarray:
        """``at_least[c, b]`` = pixels of class c in bins >= b, with a final column of zeros."""
        at_least = np.zeros((counts.shape[0], counts.shape[1] + 1), dtype=np.int64)
        at_least[:, :-1] = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
        return at_least

    def state_dict(self) -> dict[str, object]:
        """Counts as a tensor (loadable with ``torch.load(weights_only=True)``)."""
        return {"num_classes": self.num_classes, "bins": self.bins, "counts": self.counts.cpu().clone()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore counts saved by :meth:`state_dict` for the same classes and bins."""
        if (state["num_classes"], state["bins"]) != (self.num_classes, self.bins):
            raise ValueError(
                f"histogram state for {state['num_classes']} classes x {state['bins']} bins, "
                f"expected {self.num_classes} x {self.bins}"
            )
        counts = torch.as_tensor(state["counts"]).to(torch.int64)
        if counts.shape != self.counts.shape:
            raise ValueError(f"counts of shape {tuple(counts.shape)}, expected {tuple(self.counts.shape)}")
        self.counts.copy_(counts)
