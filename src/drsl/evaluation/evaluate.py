"""Evaluation over a labelled dataset: sharded, batched inference on the device, one confusion
matrix, the mIoU of each evaluation subset of the class set (e.g. 19/16/13).

Images are decoded by DataLoader workers; consecutive images of one size go through the model as
one batch (``eval.batch_size``), under the configured autocast; probabilities are upsampled to
label size in bands, reduced to a uint8 argmax and counted against the labels on the device
(:class:`ConfusionMatrix`), so nothing of image size returns to the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from drsl.config import Config, EvalConfig
from drsl.engine.distributed import DistInfo
from drsl.engine.logging import progress as progress_bar
from drsl.engine.trainer import AMP_DTYPES, autocast, conv_settings
from drsl.evaluation.inference import predict_labels
from drsl.evaluation.metrics import ConfusionMatrix, summarize

if TYPE_CHECKING:
    from drsl.data.classes import ClassSet

ProbFn = Callable[[Tensor], Tensor]


def shard(dataset: Dataset, dist: DistInfo) -> Dataset:
    """This rank's share of ``dataset`` (every world_size-th item)."""
    if not dist.enabled:
        return dataset
    return Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))  # type: ignore[arg-type]


def collate_same_size(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stack runs of consecutive samples with equal image and label sizes into batches.

    Labels (train ids, 255 = ignore) travel as uint8; names and indices as lists.
    """
    groups: list[list[dict[str, Any]]] = []
    for sample in samples:
        size = (sample["image"].shape, sample["label"].shape)
        if groups and (groups[-1][0]["image"].shape, groups[-1][0]["label"].shape) == size:
            groups[-1].append(sample)
        else:
            groups.append([sample])
    return [
        {
            "image": torch.stack([s["image"] for s in group]),
            "label": torch.stack([s["label"].to(torch.uint8) for s in group]),
            "name": [s["name"] for s in group],
            "index": [s["index"] for s in group],
        }
        for group in groups
    ]


def prediction_batches(
    prob_fn: ProbFn,
    dataset: Dataset,
    cfg: EvalConfig,
    dist: DistInfo,
    num_workers: int = 0,
    progress: bool = False,
    description: str = "predict",
) -> Iterator[tuple[dict[str, Any], Tensor, Tensor]]:
    """Yield ``(batch, confidence, labels)`` for this rank's samples, in dataset order.

    ``batch`` holds up to ``cfg.batch_size`` same-size samples (uint8 images and labels on the
    host); ``confidence`` (float32) and ``labels`` (uint8), each (B, H, W) at label size, are on
    ``dist.device`` (see :func:`predict_labels`).
    """
    images = shard(dataset, dist)
    loader = DataLoader(
        images, batch_size=cfg.batch_size, num_workers=num_workers, collate_fn=collate_same_size,
        pin_memory=dist.device.type == "cuda",
    )
    bar = progress_bar(total=len(images), enabled=progress and dist.is_main, desc=description)  # type: ignore[arg-type]
    with bar:
        for groups in loader:
            for batch in groups:
                x = batch["image"].to(dist.device, non_blocking=True).float().div_(255.0)
                confidence, labels = predict_labels(prob_fn, x, cfg, out_size=batch["label"].shape[-2:])
                yield batch, confidence, labels
                bar.update(len(batch["name"]))


def evaluate(
    prob_fn: ProbFn,
    dataset: Dataset,
    cfg: EvalConfig,
    dist: DistInfo,
    classes: ClassSet,
    subsets: Sequence[int] | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """Summary (see metrics.summarize) and the confusion matrix, reduced over ranks; ``subsets``
    are sizes of evaluation subsets of ``classes`` (default: all of them, the whole set first)."""
    matrix = ConfusionMatrix(classes.num_classes)
    for batch, _, labels in prediction_batches(prob_fn, dataset, cfg, dist, num_workers, progress, "evaluate"):
        matrix.update(labels, batch["label"].to(dist.device, non_blocking=True))
    matrix.all_reduce()
    return summarize(matrix.matrix, classes, subsets), matrix.matrix


def flat_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """mIoU per subset and per-class IoU as flat scalars (percent), for logs."""
    out = {f"mIoU{k}": 100 * v for k, v in summary["miou"].items() if v is not None}
    out.update({f"IoU/{k}": 100 * v for k, v in summary["per_class_iou"].items() if v is not None})
    return out


def segmentor_prob_fn(
    segmentor: torch.nn.Module, amp: str = "none", channels_last: bool = False, head: ProbFn | None = None
) -> ProbFn:
    """Softmax probabilities (float32) of a segmentor's logits, its forward under autocast
    (``amp`` "bf16"/"fp16", or "none") and on NHWC inputs when ``channels_last``. ``head`` maps
    images to other class probabilities of the same model (another head's), used instead."""
    dtype = AMP_DTYPES.get(amp)

    def probs(images: Tensor) -> Tensor:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(images.device, dtype):
            if head is not None:
                return head(images).float()
            logits = segmentor(images).logits
        return torch.softmax(logits.float(), dim=1)

    return probs


def config_prob_fn(
    segmentor: torch.nn.Module, config: Config, device: torch.device, head: ProbFn | None = None
) -> ProbFn:
    """:func:`segmentor_prob_fn` as a config asks on ``device``: ``eval.amp`` ("train": as
    ``train.amp``) and the memory layout of ``train.channels_last``."""
    amp = config.train.amp if config.eval.amp == "train" else config.eval.amp
    return segmentor_prob_fn(segmentor, amp, conv_settings(config.train, device)[0], head)
