"""The round-based self-training host (CBST lineage): per round, pseudo-label the whole target
train set with the current model, then train on source + pseudo-labelled target.

``train.iterations`` is split evenly over ``adapt.rounds``. A checkpoint is written at every round
boundary before pseudo-labelling, and a pseudo-label set counts only once its manifest exists, so a
run killed anywhere resumes to the same result.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from drsl.adaptation.context import RunContext, batches, joint_batches, source_batches
from drsl.adaptation.pseudo_label_pass import generate_pseudo_labels, measure_quality, pseudo_label_path
from drsl.adaptation.pseudo_labels import is_complete, portion_for_round
from drsl.data.errors import DataError
from drsl.data.io import read_label
from drsl.data.transforms import build_train_transform
from drsl.engine.sampling import SeededView

log = logging.getLogger("drsl")


class PseudoLabelLoader:
    """Replaces a target sample's label by its stored pseudo-label (picklable for workers)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        path = pseudo_label_path(self.folder, sample["name"])
        label = read_label(path)
        if label.shape != tuple(sample["image"].shape[-2:]):
            raise DataError(
                path, f"pseudo-label is {label.shape}, its image {tuple(sample['image'].shape[-2:])}: "
                "it was made for another resize setting",
            )
        sample["label"] = torch.from_numpy(label).long()
        return sample


def round_length(ctx: RunContext) -> int:
    """Training iterations per round."""
    return max(1, ctx.config.train.iterations // ctx.config.adapt.rounds)


def prepare_round(ctx: RunContext, round_index: int) -> str:
    """Make sure round ``round_index``'s pseudo-labels exist; returns their folder."""
    folder = ctx.work_dir / "pseudo_labels" / f"round_{round_index}"
    if is_complete(folder):
        return str(folder)
    config = ctx.config
    fusion = config.adapt.pseudo_label.fusion if round_index > 0 else "none"
    portion = portion_for_round(config.adapt.pseudo_label, round_index)
    manifest = generate_pseudo_labels(
        ctx.module, ctx.target, folder, config, ctx.dist, portion, round_index, fusion,  # type: ignore[arg-type]
        checkpoint=f"{ctx.work_dir / 'checkpoints' / 'latest.pt'}@{ctx.trainer.iteration}",
    )
    if ctx.dist.is_main:
        quality = measure_quality(ctx.target, folder, config.model.num_classes)  # type: ignore[arg-type]
        logs = {"portion": portion, "coverage": float(manifest["coverage"] or 0.0)}  # None: nothing predicted
        if quality is not None:
            logs.update(precision=float(quality["precision"]), truth_coverage=float(quality["coverage"]))
        ctx.logger.scalars(ctx.trainer.iteration, logs, prefix="pseudo_labels/")
        log.info("round %d pseudo-labels: %s", round_index, logs)
    return str(folder)


def run_rounds(ctx: RunContext) -> None:
    """Run the remaining rounds from the trainer's current iteration."""
    config, length = ctx.config, round_length(ctx)
    transform = build_train_transform(config.data.target_augment)
    for round_index in range(ctx.trainer.iteration // length, config.adapt.rounds):
        end = config.train.iterations if round_index == config.adapt.rounds - 1 else (round_index + 1) * length
        if ctx.trainer.iteration >= end:
            continue
        if ctx.trainer.iteration == round_index * length:
            ctx.trainer.save(keep_numbered=False)
        folder = prepare_round(ctx, round_index)
        view = SeededView(ctx.target, transform, prepare=PseudoLabelLoader(folder))  # type: ignore[arg-type]
        start = ctx.trainer.iteration
        ctx.trainer.fit(
            joint_batches(
                source_batches(ctx),
                batches(view, config, config.seed + 1, start, ctx.dist),
            ),
            until=end,
            description=f"round {round_index + 1}/{config.adapt.rounds}",
        )
