"""Class-balanced (CBST) selection for the online host, and the per-round portion schedule."""

from __future__ import annotations

import torch

from drsl.adaptation.pseudo_labels.histogram import keep_count
from drsl.config import PseudoLabelConfig
from drsl.data.labels import IGNORE_INDEX


def portion_for_round(config: PseudoLabelConfig, round_index: int) -> float:
    """Portion kept in round ``round_index`` (0-based): start + index * step, capped at max."""
    if round_index < 0:
        raise ValueError(f"round_index must be >= 0, got {round_index}")
    portion = config.portion_start + round_index * config.portion_step
    return round(min(portion, config.portion_max), 9)


def class_balanced_thresholds(
    score: torch.Tensor, predicted: torch.Tensor, num_classes: int, portion: float
) -> torch.Tensor:
    """Per-class score thresholds (float, ``inf`` = keep nothing) of the CBST rule.

    Threshold of class c = the floor(portion * N_c)-th largest score among the N_c pixels predicted
    as c (CRST's kc_parameters), so keeping ``score >= threshold[predicted]`` keeps the top
    ``portion`` of every class, ties at the threshold included. Exact: one sort, no quantisation.
    """
    score = score.reshape(-1)
    pred = predicted.reshape(-1)
    keep_nothing = torch.full((num_classes,), float("inf"), dtype=score.dtype, device=score.device)
    if score.numel() == 0:
        return keep_nothing
    by_score = torch.argsort(score, descending=True, stable=True)
    order = by_score[torch.argsort(pred[by_score], stable=True)]
    sorted_score = score[order]  # grouped by class, descending within each class
    totals = torch.bincount(pred, minlength=num_classes)
    starts = torch.cumsum(totals, 0) - totals
    need = torch.tensor(
        [keep_count(portion, n) for n in totals.tolist()], device=score.device, dtype=torch.int64
    )
    index = (starts + need - 1).clamp(0, score.numel() - 1)
    return torch.where(need > 0, sorted_score[index], keep_nothing)


@torch.no_grad()
def select_class_balanced(
    predicted: torch.Tensor, score: torch.Tensor, num_classes: int, portion: float,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Pseudo-labels (same shape, int64) keeping the top ``portion`` of each class, per batch.

    ``predicted`` holds class ids, ``ignore_index`` where a fusion rule vetoed the pixel (never
    kept, never counted); ``score`` the confidence score -log(1 - p) (see
    :func:`drsl.adaptation.posterior.fuse`). A pixel keeps its class if its score is among the top
    ``portion`` of the batch's pixels predicted as that class, else it gets ``ignore_index``.
    """
    if predicted.shape != score.shape:
        raise ValueError(f"shape mismatch: predicted {tuple(predicted.shape)}, score {tuple(score.shape)}")
    valid = predicted != ignore_index
    thresholds = class_balanced_thresholds(score[valid], predicted[valid], num_classes, portion)
    keep = valid & (score >= thresholds[predicted.clamp(0, num_classes - 1)])
    return torch.where(keep, predicted, torch.full_like(predicted, ignore_index)).long()
