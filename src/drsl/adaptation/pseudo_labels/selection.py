"""Class-balanced (CBST) selection for the online host, and the per-round portion schedule."""

from __future__ import annotations

import torch

from drsl.adaptation.pseudo_labels.histogram import keep_count
from drsl.config import PseudoLabelConfig


def portion_for_round(config: PseudoLabelConfig, round_index: int) -> float:
    """Portion kept in round ``round_index`` (0-based): start + index * step, capped at max."""
    if round_index < 0:
        raise ValueError(f"round_index must be >= 0, got {round_index}")
    portion = config.portion_start + round_index * config.portion_step
    return round(min(portion, config.portion_max), 9)


def class_balanced_thresholds(
    confidence: torch.Tensor, predicted: torch.Tensor, num_classes: int, portion: float
) -> torch.Tensor:
    """Per-class confidence thresholds (float, ``inf`` = keep nothing) of the CBST rule.

    Threshold of class c = the ceil(portion * N_c)-th largest confidence among the N_c pixels
    predicted as c, so keeping ``confidence >= threshold[predicted]`` keeps the top ``portion`` of
    every class, ties at the threshold included. Exact: one sort, no quantisation.
    """
    conf = confidence.reshape(-1)
    pred = predicted.reshape(-1)
    keep_nothing = torch.full((num_classes,), float("inf"), dtype=conf.dtype, device=conf.device)
    if conf.numel() == 0:
        return keep_nothing
    by_conf = torch.argsort(conf, descending=True, stable=True)
    order = by_conf[torch.argsort(pred[by_conf], stable=True)]
    sorted_conf = conf[order]  # grouped by class, descending within each class
    totals = torch.bincount(pred, minlength=num_classes)
    starts = torch.cumsum(totals, 0) - totals
    need = torch.tensor(
        [keep_count(portion, n) for n in totals.tolist()], device=conf.device, dtype=torch.int64
    )
    index = (starts + need - 1).clamp(0, conf.numel() - 1)
    return torch.where(need > 0, sorted_conf[index], keep_nothing)


@torch.no_grad()
def select_class_balanced(
    probs: torch.Tensor, portion: float, ignore_index: int = 255
) -> torch.Tensor:
    """Pseudo-labels (B, H, W) int64 from class posteriors (B, C, H, W), class-balanced per batch.

    Every pixel gets its argmax class if its confidence (max posterior) is among the top
    ``portion`` of the batch's pixels predicted as that class, else ``ignore_index``. Pixels whose
    posterior is all zero (excluded by a fusion rule) are never kept and do not count.
    """
    if probs.dim() != 4:
        raise ValueError(f"probs must be (B, C, H, W), got shape {tuple(probs.shape)}")
    confidence, predicted = probs.max(dim=1)
    vetoed = confidence <= 0  # all-zero posteriors: pixels a fusion rule excluded
    thresholds = class_balanced_thresholds(
        confidence[~vetoed], predicted[~vetoed], probs.shape[1], portion
    )
    keep = (confidence >= thresholds[predicted]) & ~vetoed
    return torch.where(keep, predicted, torch.full_like(predicted, ignore_index))
