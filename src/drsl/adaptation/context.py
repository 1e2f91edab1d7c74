"""The hosts' floor: the run context every self-training host receives, and the resumable,
rank-aware batch streams they train on. Hosts import this module; ``drsl.training`` builds the
context and chooses the host, so imports run one way."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from drsl.adaptation.self_training import SelfTrainingModule
from drsl.config import Config, ConfigError
from drsl.data.class_balance import RareClassCrops, RareClassSampling
from drsl.data.classes import ClassSet
from drsl.data.labels import IGNORE_INDEX
from drsl.engine.distributed import DistInfo
from drsl.engine.logging import RunLogger
from drsl.engine.sampling import ResumableSampler, SeededView
from drsl.engine.trainer import Trainer


@dataclass
class RunContext:
    """Everything a host needs: config, process info, the trainer and the datasets."""

    config: Config
    dist: DistInfo
    trainer: Trainer
    logger: RunLogger
    source: Dataset
    target: Dataset | None
    val: Dataset | None
    #: The classes the model predicts (data.classes, resolved).
    classes: ClassSet
    #: Rare-class sampling of the source crops (class-balanced sampling), None for uniform.
    source_sampling: RareClassSampling | None = None
    #: metrics.jsonl records written when the resumed checkpoint was saved (None: not known).
    log_records: int | None = None

    @property
    def module(self) -> SelfTrainingModule:
        """The training module (unwrapped from DDP)."""
        return self.trainer.module  # type: ignore[return-value]

    @property
    def work_dir(self) -> Path:
        """The run directory."""
        return Path(self.config.work_dir)


def per_rank_batch(config: Config, dist: DistInfo) -> int:
    """The per-process batch: the configured global batch split over ranks."""
    global_batch = config.data.batch_size
    parts = dist.world_size * config.train.grad_accum
    if global_batch % parts:
        raise ConfigError(
            f"data.batch_size={global_batch} (the global batch) must be divisible by "
            f"world size {dist.world_size} x train.grad_accum {config.train.grad_accum}"
        )
    return global_batch // dist.world_size


def batches(
    view: Dataset, config: Config, seed: int, start_batch: int, dist: DistInfo,
    rare_classes: RareClassSampling | None = None,
) -> Iterator[Any]:
    """An endless, resumable iterator of training batches from ``view`` (with ``rare_classes``:
    a :class:`SeededView` whose crops are drawn by rare-class sampling)."""
    batch_size = per_rank_batch(config, dist)
    draw = None
    if rare_classes is not None:
        assert isinstance(view, SeededView)
        view, draw = RareClassCrops(view, rare_classes), rare_classes.draw
    sampler = ResumableSampler(
        len(view), batch_size, seed, start_batch, dist.rank, dist.world_size, draw  # type: ignore[arg-type]
    )
    loader = DataLoader(
        view, batch_size=batch_size, sampler=sampler, num_workers=config.data.num_workers,
        pin_memory=dist.device.type == "cuda", drop_last=True,
        persistent_workers=config.data.num_workers > 0,
    )
    return iter(loader)


def source_batches(ctx: RunContext) -> Iterator[Any]:
    """Labelled source batches from the trainer's current iteration, as configured."""
    config = ctx.config
    return batches(ctx.source, config, config.seed, ctx.trainer.iteration, ctx.dist, ctx.source_sampling)


def joint_batches(ctx: RunContext, target: Dataset) -> Iterator[dict[str, Any]]:
    """Pairs ``{"source", "target"}`` of :func:`source_batches` and batches of the ``target`` view
    (seeded apart from the source's), from the trainer's current iteration."""
    config = ctx.config
    source = source_batches(ctx)
    target_batches = batches(target, config, config.seed + 1, ctx.trainer.iteration, ctx.dist)
    return ({"source": s, "target": t} for s, t in zip(source, target_batches))


def hide_target_labels(sample: dict[str, Any]) -> dict[str, Any]:
    """Target ground truth never reaches a loss: replace it by an all-ignored map."""
    sample["label"] = torch.full_like(sample["label"], IGNORE_INDEX)
    return sample
