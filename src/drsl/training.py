"""Assembles a run from its config: data views, model, trainer; then hands over to the host of
the chosen method (source-only, round-based self-training, or online EMA-teacher self-training)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from drsl.adaptation.context import RunContext, hide_target_labels, source_batches
from drsl.adaptation.drsl import DRSLRegularizer
from drsl.adaptation.ema import EMATeacher
from drsl.adaptation.online import run_online
from drsl.adaptation.rounds import run_rounds
from drsl.adaptation.self_training import SelfTrainingModule
from drsl.config import Config
from drsl.data.class_balance import source_sampling_weights
from drsl.data.registry import build_dataset
from drsl.data.transforms import build_train_transform
from drsl.engine.checkpoint import latest_checkpoint, load_checkpoint
from drsl.engine.distributed import DistInfo, init_distributed
from drsl.engine.logging import RunLogger
from drsl.engine.run_dir import prepare_run_dir
from drsl.engine.sampling import SeededView
from drsl.engine.seeding import seed_everything
from drsl.engine.trainer import Trainer
from drsl.evaluation.evaluate import evaluate, flat_scalars, segmentor_prob_fn
from drsl.evaluation.metrics import format_table
from drsl.fileio import atomic_write_json
from drsl.models.segmentor import build_model
from drsl.models.weights import load_matching

log = logging.getLogger("drsl")


def source_view(config: Config) -> SeededView:
    """The labelled source training set with its augmentation."""
    return SeededView(build_dataset(config.data.source), build_train_transform(config.data.source_augment))


def load_initial_weights(module: SelfTrainingModule, path: str) -> None:
    """Initialise the segmentor (and regulariser, when present in the file) from a checkpoint."""
    state = load_checkpoint(path)["model"]
    for name in ("segmentor", "regularizer"):
        part = getattr(module, name)
        prefix = f"{name}."
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if part is not None and (sub or name == "segmentor"):
            load_matching(part, sub, path)


def build_module(config: Config) -> SelfTrainingModule:
    """The training module for the configured method, with initial weights and EMA teacher."""
    segmentor = build_model(config.model)
    regularizer: nn.Module | None = None
    if config.adapt.method == "drsl" and config.adapt.drsl.enabled:
        regularizer = DRSLRegularizer(
            segmentor.feature_channels, config.model.num_classes, config.adapt.drsl, seed=config.seed
        )
    module = SelfTrainingModule(segmentor, config, regularizer)
    if config.init_checkpoint:
        load_initial_weights(module, config.init_checkpoint)
    if module.uses_target and config.adapt.host == "online":
        module.teacher = EMATeacher(module.student_parts(), config.adapt.ema_momentum)
    return module


def make_evaluator(config: Config, val: Dataset, dist: DistInfo) -> Any:
    """A callable(module, iteration) -> flat mIoU scalars on the validation set."""

    def run(module: nn.Module, iteration: int) -> dict[str, float]:
        module.eval()
        summary, _ = evaluate(
            segmentor_prob_fn(module.segmentor), val, config.eval, dist,  # type: ignore[arg-type]
            config.model.num_classes, config.data.eval_subsets,
        )
        module.train()
        return flat_scalars(summary)

    return run


def add_panels(trainer: Trainer, config: Config, source: Dataset, target: Dataset | None) -> None:
    """Log a panel of the first source and target (else val) sample every train.panel_every steps.

    ``source`` is the plain (un-augmented) source dataset.
    """
    from drsl.viz.panels import PanelWriter

    writer = PanelWriter(trainer.logger, config.train.panel_every)
    if writer.every <= 0 or target is None or not trainer.logger.enabled:
        return
    source_sample = source[0]
    target_sample = hide_target_labels(target[0])
    trainer.step_hooks.append(lambda it: writer.maybe_log(it, trainer.module, source_sample, target_sample))


def build_context(config: Config, resume: str | bool | None, dist: DistInfo) -> RunContext:
    """Seed, build datasets/model/trainer, and restore a checkpoint when resuming."""
    seed_everything(config.seed, config.train.deterministic)
    if dist.is_main:
        prepare_run_dir(config)
    logger = RunLogger(config.work_dir, enabled=dist.is_main)
    module = build_module(config)
    source = source_view(config)
    val = build_dataset(config.data.val) if config.data.val is not None else None
    target = None
    if module.uses_target:
        if config.data.target is None:
            raise ValueError(f"adapt.method={config.adapt.method} needs data.target")
        target = build_dataset(config.data.target, require_labels=False)
    trainer = Trainer(
        config, module, dist, logger, make_evaluator(config, val, dist) if val is not None else None
    )
    add_panels(trainer, config, source.dataset, target if target is not None else val)
    checkpoint = latest_checkpoint(config.work_dir) if resume is True else resume or None
    if checkpoint:
        trainer.resume(checkpoint)
        logger.truncate_after(trainer.iteration)
        log.info("resumed from %s at iteration %d", checkpoint, trainer.iteration)
    weights = source_sampling_weights(
        source.dataset, config.data.source_sampling,  # type: ignore[arg-type]
        Path(config.work_dir) / "source_class_counts.json", dist.is_main,
    )
    return RunContext(config, dist, trainer, logger, source, target, val, weights)


def finish(ctx: RunContext) -> dict[str, Any]:
    """Final checkpoint and evaluation (written to ``eval.json``)."""
    ctx.trainer.save()
    summary: dict[str, Any] = {"iteration": ctx.trainer.iteration}
    if ctx.val is not None:
        ctx.module.eval()
        result, matrix = evaluate(
            segmentor_prob_fn(ctx.module.segmentor), ctx.val, ctx.config.eval, ctx.dist,
            ctx.config.model.num_classes, ctx.config.data.eval_subsets, progress=True,
        )
        summary.update(result)
        summary["confusion_matrix"] = matrix.tolist()
        ctx.logger.scalars(ctx.trainer.iteration, flat_scalars(result), prefix="val/")
        if ctx.dist.is_main:
            print(format_table(result))
    if ctx.dist.is_main:
        atomic_write_json(ctx.work_dir / "eval.json", summary)
    return summary


def run_training(config: Config, resume: str | bool | None = None, device: str = "auto") -> dict[str, Any]:
    """Train (and adapt) as the config says; returns the final evaluation summary."""
    dist = init_distributed(device)
    ctx = build_context(config, resume, dist)
    try:
        if not ctx.module.uses_target:
            ctx.trainer.fit(({"source": batch} for batch in source_batches(ctx)), until=config.train.iterations)
        elif config.adapt.host == "rounds":
            run_rounds(ctx)
        else:
            run_online(ctx)
        return finish(ctx)
    finally:
        ctx.logger.close()


def read_eval(work_dir: str | Path) -> dict[str, Any]:
    """The ``eval.json`` of a finished run."""
    return json.loads((Path(work_dir) / "eval.json").read_text())
