"""The round-based self-training host (CBST lineage): per round, pseudo-label the whole target
train set with the current model, then train on source + pseudo-labelled target.

``train.iterations`` is split evenly over ``adapt.rounds``. A checkpoint is written at every round
boundary before pseudo-labelling, and a pseudo-label set counts only once its manifest exists, so a
run killed anywhere resumes to the same result.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch

from drsl.adaptation.context import RunContext, joint_batches
from drsl.adaptation.pseudo_label_pass import generate_pseudo_labels
from drsl.adaptation.pseudo_labels import (
    complete_set,
    is_complete,
    load_pseudo_label,
    portion_for_round,
    read_manifest,
    threshold_table,
)
from drsl.adaptation.pseudo_labels.writer import QUALITY, map_paths
from drsl.data.digest import images_digest
from drsl.data.errors import DataError
from drsl.data.transforms import build_train_transform
from drsl.engine.sampling import SeededView

log = logging.getLogger("drsl")


class PseudoLabelLoader:
    """Replaces a target sample's label by its pseudo-label from a complete set (picklable for
    loader workers; the thresholds are read once, from the set's manifest)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.table = threshold_table(read_manifest(folder))

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        label = load_pseudo_label(self.folder, sample["name"], self.table)
        if label.shape != tuple(sample["image"].shape[-2:]):
            raise DataError(
                map_paths(self.folder, sample["name"])[0], f"pseudo-label is {label.shape}, its image {tuple(sample['image'].shape[-2:])}: "
                "it was made for another resize setting",
            )
        sample["label"] = torch.from_numpy(label).long()
        return sample


def round_length(ctx: RunContext) -> int:
    """Training iterations per round."""
    return max(1, ctx.config.train.iterations // ctx.config.adapt.rounds)


def prepare_round(ctx: RunContext, round_index: int) -> str:
    """Make sure round ``round_index``'s pseudo-labels exist; returns their folder.

    At the round's start they must have been made by the current weights and settings (any other
    set is regenerated, never reused). Resumed within the round, they must be the set the
    checkpoint trained on (its fingerprint is kept in the trainer's host state); if that set is
    gone or changed, it is regenerated from the current weights, with a warning.
    """
    folder = ctx.work_dir / "pseudo_labels" / f"round_{round_index}"
    config = ctx.config
    fusion = config.adapt.pseudo_label.fusion if round_index > 0 else "none"
    portion = portion_for_round(config.adapt.pseudo_label, round_index)
    recorded = ctx.trainer.host_state.get("pseudo_labels") or {}
    images = images_digest(ctx.target.samples)  # type: ignore[union-attr]
    if ctx.trainer.iteration > round_index * round_length(ctx):
        same_images = recorded.get("images", images) == images
        same_round = recorded.get("round") == round_index
        if same_images and same_round and complete_set(folder, recorded.get("fingerprint", ""), portion):
            return str(folder)
        log.warning(
            "round %d: the pseudo-labels this run trained on are missing or changed in %s%s; regenerating "
            "them from the weights at iteration %d", round_index, folder,
            "" if same_images else " (the target images changed since they were made)", ctx.trainer.iteration,
        )
    before = read_manifest(folder) if is_complete(folder) else {}
    manifest = generate_pseudo_labels(
        ctx.module, ctx.target, folder, config, ctx.dist, portion, round_index, fusion,  # type: ignore[arg-type]
        checkpoint=f"{ctx.work_dir / 'checkpoints' / 'latest.pt'}@{ctx.trainer.iteration}", replace=True,
    )
    ctx.trainer.host_state["pseudo_labels"] = {"round": round_index, "fingerprint": manifest["fingerprint"], "images": images}
    made = (before.get("fingerprint"), before.get("portion")) != (manifest["fingerprint"], portion)
    if ctx.dist.is_main and made:  # a reused set was logged when it was made
        logs = {"portion": portion, "coverage": float(manifest["coverage"] or 0.0)}  # None: nothing predicted
        quality = folder / QUALITY
        if quality.is_file():
            measured = json.loads(quality.read_text())
            logs.update(precision=float(measured["precision"]), truth_coverage=float(measured["coverage"]))
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
        ctx.trainer.fit(
            joint_batches(ctx, view),
            until=end,
            description=f"round {round_index + 1}/{config.adapt.rounds}",
        )
