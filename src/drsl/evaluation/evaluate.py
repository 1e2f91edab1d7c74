"""Evaluation over a labelled dataset: sharded inference, one confusion matrix, 19/16/13 mIoU."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from drsl.config import EvalConfig
from drsl.engine.distributed import DistInfo
from drsl.engine.logging import progress as progress_bar
from drsl.evaluation.inference import predict_probs
from drsl.evaluation.metrics import ConfusionMatrix, summarize

ProbFn = Callable[[Tensor], Tensor]


def shard(dataset: Dataset, dist: DistInfo) -> Dataset:
    """This rank's share of ``dataset`` (every world_size-th item)."""
    if not dist.enabled:
        return dataset
    return Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))  # type: ignore[arg-type]


def iterate_predictions(
    prob_fn: ProbFn,
    dataset: Dataset,
    cfg: EvalConfig,
    dist: DistInfo,
    num_workers: int = 0,
    progress: bool = False,
    description: str = "predict",
) -> Any:
    """Yield ``(sample, probs)`` for this rank's samples; probs (C, H, W) float at label size."""
    loader = DataLoader(
        shard(dataset, dist), batch_size=1, num_workers=num_workers, collate_fn=lambda b: b[0]
    )
    for sample in progress_bar(loader, enabled=progress and dist.is_main, desc=description):
        images = sample["image"].unsqueeze(0).to(dist.device).float().div_(255.0)
        probs = predict_probs(prob_fn, images, cfg, out_size=sample["label"].shape[-2:])
        yield sample, probs[0]


def evaluate(
    prob_fn: ProbFn,
    dataset: Dataset,
    cfg: EvalConfig,
    dist: DistInfo,
    num_classes: int = 19,
    subsets: Sequence[int] = (19, 16, 13),
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """Summary (see metrics.summarize) and the confusion matrix, reduced over ranks."""
    matrix = ConfusionMatrix(num_classes)
    for sample, probs in iterate_predictions(
        prob_fn, dataset, cfg, dist, num_workers, progress, "evaluate"
    ):
        matrix.update(probs.argmax(0).cpu(), sample["label"])
    matrix.all_reduce()
    return summarize(matrix.matrix, subsets), matrix.matrix


def flat_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """mIoU per subset and per-class IoU as flat scalars (percent), for logs."""
    out = {f"mIoU{k}": 100 * v for k, v in summary["miou"].items() if v is not None}
    out.update({f"IoU/{k}": 100 * v for k, v in summary["per_class_iou"].items() if v is not None})
    return out


def segmentor_prob_fn(segmentor: torch.nn.Module) -> ProbFn:
    """Softmax probabilities of a segmentor's logits."""
    return lambda images: torch.softmax(segmentor(images).logits.float(), dim=1)
