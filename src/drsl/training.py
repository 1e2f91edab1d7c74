"""Assembles a run from its config: data views, model, trainer; then hands over to the host of
the chosen method (source-only, or a self-training host: rounds, online EMA teacher, or mixing)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from drsl.adaptation.context import RunContext, hide_target_labels, per_rank_batch, source_batches
from drsl.adaptation.drsl import DRSLRegularizer
from drsl.adaptation.ema import EMATeacher
from drsl.adaptation.mix import MixTrainingModule, run_mix
from drsl.adaptation.online import run_online
from drsl.adaptation.rounds import run_rounds
from drsl.adaptation.self_training import SelfTrainingModule
from drsl.config import Config, ConfigError
from drsl.data.checks import check_validation_masks
from drsl.data.class_balance import source_sampling
from drsl.data.classes import ClassSet, bind_class_set, stored_class_count, write_class_file
from drsl.data.registry import build_dataset
from drsl.data.transforms import build_train_transform
from drsl.engine.checkpoint import load_checkpoint
from drsl.engine.distributed import DistInfo, barrier, init_distributed
from drsl.engine.logging import RunLogger, echo, text_only
from drsl.engine.resources import TRAINING_COPIES, check_image_memory, check_model_memory, check_training_shapes
from drsl.engine.run_dir import RunDirectory, check_inputs, plan_run
from drsl.engine.run_inputs import input_record
from drsl.engine.sampling import SeededView
from drsl.engine.trackers import build_trackers, check_trackers
from drsl.engine.outputs import check_output, run_inputs
from drsl.engine.seeding import seed_everything
from drsl.engine.trainer import Trainer
from drsl.evaluation.evaluate import config_prob_fn, evaluate, flat_scalars
from drsl.evaluation.metrics import format_table
from drsl.fileio import atomic_write_json
from drsl.models.segmentor import build_model
from drsl.models.weights import load_matching

log = logging.getLogger("drsl")

#: The self-training hosts, by ``adapt.host``: each trains from the trainer's iteration to the end.
HOSTS = {"rounds": run_rounds, "online": run_online, "mix": run_mix}


def source_view(config: Config, classes: ClassSet) -> SeededView:
    """The labelled source training set with its augmentation."""
    return SeededView(build_dataset(config.data.source, classes), build_train_transform(config.data.source_augment))


def load_initial_weights(module: SelfTrainingModule, path: str, num_classes: int) -> None:
    """Initialise the segmentor (and regulariser, when present in the file) from a checkpoint
    that predicts ``num_classes`` classes (another count is a ConfigError)."""
    checkpoint = load_checkpoint(path)
    stored = stored_class_count(checkpoint, path)
    if stored is not None and stored != num_classes:
        raise ConfigError(
            f"init_checkpoint {path} predicts {stored} classes but the class set of this run has {num_classes}"
        )
    state = checkpoint["model"]
    for name in ("segmentor", "regularizer"):
        part = getattr(module, name)
        prefix = f"{name}."
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if part is not None and (sub or name == "segmentor"):
            load_matching(part, sub, path)


def build_module(config: Config) -> SelfTrainingModule:
    """The training module for the configured method, with initial weights and EMA teacher (the
    config is bound to its class set first: see :func:`drsl.data.classes.bind_class_set`)."""
    if config.model.num_classes is None:
        bind_class_set(config)
    check_model_memory(config.model)
    segmentor = build_model(config.model)
    regularizer: nn.Module | None = None
    if config.adapt.method == "drsl" and config.adapt.drsl.enabled:
        regularizer = DRSLRegularizer(
            segmentor.feature_channels, config.model.num_classes, config.adapt.drsl, seed=config.seed
        )
    mixing = config.adapt.host == "mix" and config.adapt.method != "source_only"
    module = (MixTrainingModule if mixing else SelfTrainingModule)(segmentor, config, regularizer)
    if config.init_checkpoint:
        load_initial_weights(module, config.init_checkpoint, config.model.num_classes)  # type: ignore[arg-type]
    if module.uses_target and config.adapt.host in ("online", "mix"):
        # The mixing host's teacher normalises with batch statistics, as DAFormer's.
        module.teacher = EMATeacher(module.student_parts(), config.adapt.ema_momentum, batch_statistics=mixing)
    return module


def make_evaluator(config: Config, val: Dataset, dist: DistInfo, classes: ClassSet) -> Any:
    """A callable(module, iteration) -> flat mIoU scalars on the validation set."""

    def run(module: nn.Module, iteration: int) -> dict[str, float]:
        module.eval()
        summary, _ = evaluate(
            config_prob_fn(module.segmentor, config, dist.device), val, config.eval, dist,  # type: ignore[arg-type]
            classes, config.data.eval_subsets, config.data.num_workers,
        )
        module.train()
        return flat_scalars(summary)

    return run


def add_panels(trainer: Trainer, config: Config, source: Dataset, target: Dataset | None, classes: ClassSet) -> None:
    """Log a panel of the first source and target (else val) sample every train.panel_every steps.

    ``source`` is the plain (un-augmented) source dataset.
    """
    from drsl.viz.panels import PanelWriter

    writer = PanelWriter(trainer.logger, config.train.panel_every, classes)
    if writer.every <= 0 or target is None or not trainer.logger.enabled:
        return
    source_sample = source[0]
    target_sample = hide_target_labels(target[0])
    trainer.step_hooks.append(lambda it: writer.maybe_log(it, trainer.module, source_sample, target_sample))


def build_context(config: Config, checkpoint: Path | None, dist: DistInfo, logger: RunLogger) -> RunContext:
    """Seed, build datasets/model/trainer, and load ``checkpoint`` when resuming.

    Every input (class set, datasets, initial weights, the checkpoint) is read and checked here,
    and nothing is written: a bad input stops the run before it touches its directory.
    """
    classes = bind_class_set(config)
    seed_everything(config.seed, config.train.deterministic)
    micro_batch = per_rank_batch(config, dist) // config.train.grad_accum
    check_trackers(config)
    check_model_memory(config.model, TRAINING_COPIES, dist.device)
    check_image_memory(config, dist.device)
    module = build_module(config)
    check_training_shapes(config, module.student_parts(), micro_batch)
    source = source_view(config, classes)
    val = build_dataset(config.data.val, classes) if config.data.val is not None else None
    if val is not None and dist.is_main:
        check_validation_masks(val)
    target = build_dataset(config.data.target, classes, require_labels=False) if module.uses_target else None
    trainer = Trainer(
        config, module, dist, logger, make_evaluator(config, val, dist, classes) if val is not None else None
    )
    trainer.metadata["classes"] = classes.to_dict()
    add_panels(trainer, config, source.dataset, target if target is not None else val, classes)
    log_records = None
    if checkpoint is not None:
        log_records = trainer.resume(checkpoint)
        log.info("resuming from %s at iteration %d", checkpoint, trainer.iteration)
    return RunContext(config, dist, trainer, logger, source, target, val, classes, log_records=log_records)


def start(ctx: RunContext) -> None:
    """First writes of a run that owns its directory: its text log (train.log), the class set,
    experiment trackers, the log cut back to the resumed checkpoint, the source sampling (its class
    counts cached in the run directory)."""
    ctx.logger.open_text_log()
    if ctx.dist.is_main:
        write_class_file(ctx.work_dir / "classes.yaml", ctx.classes)
        ctx.logger.trackers = build_trackers(ctx.config)
    if ctx.trainer.iteration:
        ctx.logger.truncate(ctx.log_records, ctx.trainer.iteration)
    ctx.source_sampling = source_sampling(
        ctx.source.dataset, ctx.config.data.source_sampling,  # type: ignore[arg-type]
        ctx.work_dir / "source_class_counts.json", ctx.dist.is_main,
    )


def finish(ctx: RunContext) -> dict[str, Any]:
    """Final checkpoint and evaluation (written to ``eval.json``)."""
    ctx.trainer.save()
    summary: dict[str, Any] = {"iteration": ctx.trainer.iteration}
    if ctx.val is not None:
        ctx.module.eval()
        result, matrix = evaluate(
            config_prob_fn(ctx.module.segmentor, ctx.config, ctx.dist.device), ctx.val, ctx.config.eval,
            ctx.dist, ctx.classes, ctx.config.data.eval_subsets,
            ctx.config.data.num_workers, progress=True,
        )
        summary.update(result)
        summary["confusion_matrix"] = matrix.tolist()
        ctx.logger.scalars(ctx.trainer.iteration, flat_scalars(result), prefix="val/")
        if ctx.dist.is_main:
            echo(format_table(result, f"{ctx.config.name}: target validation at iteration "
                                      f"{ctx.trainer.iteration} ({ctx.work_dir})"))
    if ctx.dist.is_main:
        atomic_write_json(ctx.work_dir / "eval.json", summary)
    return summary


def run_training(
    config: Config, resume: bool | str | Path | None = None, device: str = "auto",
    overwrite: bool = False, allow_config_change: bool = False, accept_changes: bool = False,
    announce: bool = True,
) -> dict[str, Any]:
    """Train (and adapt) as the config says; returns the final evaluation summary.

    ``resume``: None starts a fresh run (a work dir holding another run is refused unless
    ``overwrite``); True continues ``work_dir``'s latest checkpoint; a path continues from that
    checkpoint; "auto" continues when the work dir holds a checkpoint of the same config and
    starts otherwise. A resumed run whose config differs from its recorded one needs
    ``allow_config_change``; one whose class set or dataset files changed since it recorded them
    (:mod:`drsl.engine.run_inputs`) needs ``accept_changes``. See :mod:`drsl.engine.run_dir`. The
    run's first line (name, length, folder) goes to stderr when ``announce`` (a caller that printed
    one already passes False) and always to its train.log.
    """
    dist = init_distributed(device, config.dist)
    bind_class_set(config)  # before the config is compared with the run directory's
    inputs = [*run_inputs(config), ("the checkpoint to resume from", resume if isinstance(resume, (str, Path)) else None)]
    check_output(config.work_dir, inputs, folder=True, whole=overwrite, inside_inputs=True, run_folder=True)
    plan = plan_run(config, resume, overwrite, allow_config_change)
    barrier()  # every process reads the directory before the main one writes to it
    if plan.finished:
        log.info("%s finished already (pass a changed schedule with --change-config to extend it)", config.work_dir)
        return read_eval(config.work_dir)
    logger = RunLogger(config.work_dir, enabled=dist.is_main, name=config.name, text_log=True)
    if dist.is_main:
        line = start_line(config, plan.checkpoint)
        if announce:
            echo(line)
        else:
            text_only.info(line)
    try:
        ctx = build_context(config, plan.checkpoint, dist, logger)
        datasets = {"data.source": ctx.source.dataset, "data.target": ctx.target, "data.val": ctx.val}
        plan = check_inputs(plan, input_record(config.data.classes, ctx.classes, datasets), accept_changes)  # type: ignore[arg-type]
        with RunDirectory(plan, enabled=dist.is_main):
            barrier()
            start(ctx)
            if not ctx.module.uses_target:
                ctx.trainer.fit(({"source": batch} for batch in source_batches(ctx)), until=config.train.iterations)
            else:
                HOSTS[config.adapt.host](ctx)
            summary = finish(ctx)
        barrier()  # leave together: the main process records the outcome first
        return summary
    except BaseException as exc:
        text_only.error("stopped by %s: %s", type(exc).__name__, " ".join(str(exc).split()))
        raise
    finally:
        logger.close()


def start_line(config: Config, checkpoint: Path | None) -> str:
    """The line a run prints first, before anything slow: its name, length and folder."""
    resumed = f", resuming from {checkpoint}" if checkpoint is not None else ""
    return f"run {config.name}: {config.train.iterations} iterations, writing to {config.work_dir}{resumed}"


def read_eval(work_dir: str | Path) -> dict[str, Any]:
    """The ``eval.json`` of a finished run."""
    return json.loads((Path(work_dir) / "eval.json").read_text())
