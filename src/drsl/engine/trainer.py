"""The training loop, owned once: optimiser and schedule (engine.optim), AMP, gradient
accumulation, DDP, logging, evaluation and checkpoints. Hosts supply batches and a module whose
forward returns the loss."""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager, nullcontext
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from drsl.config import Config, ConfigError, TrainConfig
from drsl.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from drsl.engine.distributed import DistInfo, barrier
from drsl.engine.logging import RunLogger
from drsl.engine.optim import build_optimizer, build_scheduler
from drsl.errors import NonFiniteLossError
from drsl.models.batchnorm import sync_batchnorm
from drsl.models.weights import load_matching


class StepOutput(NamedTuple):
    """What a training module's forward returns: the loss to minimise and scalars to log.

    Logged values are 0-d tensors (left on the device: the trainer reads them every
    ``train.log_every`` steps) or Python numbers.
    """

    loss: Tensor
    logs: dict[str, Tensor | float]


class LogWindow:
    """The logged scalars summed on the device over the steps since the last read, and the first
    iteration whose loss was not finite with its terms; read from the device only when asked."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.sums: Tensor | None = None
        self.numbers: dict[str, float] = {}
        self.steps = 0
        self.first_bad: Tensor | None = None
        self.bad_terms: Tensor | None = None

    @torch.no_grad()
    def add(self, loss: Tensor, logs: dict[str, Tensor | float], iteration: int, weight: float = 1.0) -> None:
        """Add one (micro-)batch's logs, weighted; remember ``iteration`` if its loss is not finite."""
        tensors = {k: v for k, v in logs.items() if isinstance(v, Tensor)}
        if not self.keys:
            self.keys = list(tensors)
        values = torch.stack([tensors[k] for k in self.keys] + [loss]).float()  # one vector, promoted
        self.sums = values * weight if self.sums is None else self.sums.add_(values, alpha=weight)
        for key, value in logs.items():
            if not isinstance(value, Tensor):
                self.numbers[key] = self.numbers.get(key, 0.0) + float(value) * weight
        bad = ~torch.isfinite(values[-1])
        if self.first_bad is None:
            self.first_bad = torch.full((), -1, dtype=torch.long, device=values.device)
            self.bad_terms = values
        first = bad & (self.first_bad < 0)
        self.first_bad = torch.where(first, iteration, self.first_bad)
        self.bad_terms = torch.where(first, values, self.bad_terms)

    def end_step(self) -> None:
        """Count one optimiser step."""
        self.steps += 1

    def check(self) -> None:
        """Raise NonFiniteLossError naming the first iteration with a non-finite loss and its
        terms (reads one number from the device)."""
        if self.first_bad is None or int(self.first_bad) < 0:
            return
        assert self.bad_terms is not None
        values = self.bad_terms.tolist()
        terms = ", ".join(f"{k}={v:.4g}" for k, v in zip(self.keys, values))
        raise NonFiniteLossError(
            f"non-finite loss {values[-1]} at iteration {int(self.first_bad)} ({terms}); "
            "lower the learning rate, check the labels, or use amp=bf16 instead of fp16"
        )

    def read(self) -> dict[str, float]:
        """Means over the window's steps (read from the device at once), then a new window."""
        self.check()
        means = {k: v / max(self.steps, 1) for k, v in self.numbers.items()}
        if self.sums is not None and self.steps:
            means.update(zip(self.keys, (self.sums[:-1] / self.steps).tolist()))
        self.sums, self.numbers, self.steps = None, {}, 0
        return means


def conv_settings(train: TrainConfig, device: torch.device) -> tuple[bool, bool]:
    """``(channels_last, cudnn_benchmark)`` for ``device``.

    "auto" means on for CUDA and off elsewhere; autotuning stays off under ``train.deterministic``
    (it may pick kernels that are not deterministic), and asking for both is a ConfigError.
    """
    cuda = device.type == "cuda"
    if train.cudnn_benchmark is True and train.deterministic:
        raise ConfigError("train.cudnn_benchmark=true contradicts train.deterministic=true; drop one")
    channels_last = cuda if train.channels_last == "auto" else bool(train.channels_last)
    benchmark = cuda and not train.deterministic if train.cudnn_benchmark == "auto" else bool(train.cudnn_benchmark)
    return channels_last, benchmark


def compile_model(module: nn.Module) -> None:
    """``torch.compile`` the module's segmentor (the module itself when it has none), in place.

    ``nn.Module.compile`` keeps the parameter names, so checkpoints are unchanged; the losses and
    the regulariser stay eager (their sampling would only break the graph).
    """
    getattr(module, "segmentor", module).compile()


#: The autocast dtypes of ``train.amp`` (and ``eval.amp``); "none" runs in float32.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """``torch.autocast`` on ``device`` in ``dtype``; no context at all for None (float32), which
    also runs on devices autocast does not know, such as ``meta``."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def move_to(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor of a nested batch to ``device``; 4-d images (uint8 or float) optionally NHWC."""
    if isinstance(batch, Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        return {k: move_to(v, device, channels_last) for k, v in batch.items()}
    return batch


def split_batch(batch: Any, parts: int) -> list[Any]:
    """Split every tensor of a nested batch into ``parts`` micro-batches along dim 0."""
    if parts == 1:
        return [batch]
    if isinstance(batch, Tensor):
        return list(batch.chunk(parts))
    if isinstance(batch, dict):
        pieces = {k: split_batch(v, parts) for k, v in batch.items()}
        return [{k: v[i] for k, v in pieces.items()} for i in range(parts)]
    if isinstance(batch, list):
        size = math.ceil(len(batch) / parts)
        return [batch[i * size:(i + 1) * size] for i in range(parts)]
    return [batch] * parts


class Trainer:
    """Optimises a training module for a number of iterations, resumably.

    The module's ``forward(batch, iteration)`` returns a :class:`StepOutput`; its
    ``param_groups(optim_cfg)`` lists parameter groups with their ``lr`` multipliers.
    """

    def __init__(
        self,
        config: Config,
        module: nn.Module,
        dist: DistInfo,
        logger: RunLogger,
        evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None,
    ) -> None:
        self.config, self.dist, self.logger, self.evaluate = config, dist, logger, evaluate
        train = config.train
        if config.model.sync_bn and dist.enabled:
            if dist.device.type == "cpu" and any(
                isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()
            ):
                raise ConfigError(
                    "model.sync_bn=true needs CUDA: torch's SyncBatchNorm has no CPU implementation. "
                    "On CPU use model.freeze_bn=true (fixed statistics, identical to one process) "
                    "or model.sync_bn=false (per-process batch statistics)"
                )
            module = sync_batchnorm(module)
        self.channels_last, benchmark = conv_settings(train, dist.device)
        if dist.device.type == "cuda":
            torch.backends.cudnn.benchmark = benchmark
        self.module = module.to(dist.device)
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        if train.compile:
            compile_model(self.module)
        self.model: nn.Module = (
            DistributedDataParallel(self.module, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
            if dist.enabled
            else self.module
        )
        self.optimizer = build_optimizer(module, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, train.iterations)
        self.amp_dtype = AMP_DTYPES.get(train.amp)
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=train.amp == "fp16")
        self.iteration = 0
        #: What a host must find again on resume (JSON-like: strings, numbers, dicts), e.g. the
        #: fingerprint of the pseudo-labels the current round trains on.
        self.host_state: dict[str, Any] = {}
        self.checkpoint_dir = Path(config.work_dir) / "checkpoints"
        #: Called with the iteration after every step (e.g. training panels); must not train.
        self.step_hooks: list[Callable[[int], None]] = []
        #: The logs of the steps since the last log line (see :meth:`fit`).
        self.window = LogWindow()
        #: Plain data saved with every checkpoint next to the config (e.g. the class set).
        self.metadata: dict[str, Any] = {}

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: model, optimizer, scheduler, scaler, RNG, iteration."""
        from drsl.config import config_to_dict

        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "rng": rng_state(),
            "config": config_to_dict(self.config),
            "metrics_records": self.logger.records,
            **self.metadata,
            "host": self.host_state,
        }

    def save(self, keep_numbered: bool = True) -> None:
        """Write ``latest.pt`` (and ``iter_N.pt``) on the main rank; every rank waits for it."""
        if self.dist.is_main:
            state = self.state_dict()
            save_checkpoint(self.checkpoint_dir / "latest.pt", state)
            if keep_numbered:
                save_checkpoint(self.checkpoint_dir / f"iter_{self.iteration}.pt", state)
                prune_checkpoints(self.checkpoint_dir, keep=3)
        barrier()

    def resume(self, path: str | Path) -> int | None:
        """Restore a checkpoint written by :meth:`save`; returns how many metrics.jsonl records
        were written when it was saved (None for checkpoints that do not say).

        Weights of another architecture are a WeightsError listing the mismatches; a file that is
        not a training checkpoint, or whose optimizer state does not fit, a CheckpointError.
        """
        state = load_checkpoint(path)
        missing = [key for key in ("optimizer", "scheduler", "scaler", "iteration", "rng") if key not in state]
        if missing:
            raise CheckpointError(
                f"{path} is not a training checkpoint (no {', '.join(missing)}; an export?): "
                "use it as init_checkpoint=... instead"
            )
        load_matching(self.module, state["model"], str(path))
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state["scaler"] or not self.scaler.is_enabled():
                # An fp16 run resumed from a bf16/fp32 checkpoint (empty scaler state) starts a fresh scale.
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"the optimizer state in {path} does not fit this run ({exc})") from None
        self.iteration = int(state["iteration"])
        self.host_state = dict(state.get("host", {}))
        restore_rng_state(state["rng"])
        return state.get("metrics_records")

    # ----------------------------------------------------------------------------- loop
    def _forward_backward(self, batch: Any) -> dict[str, Tensor | float]:
        parts = self.config.train.grad_accum
        logs: dict[str, Tensor | float] = {}
        for index, micro in enumerate(split_batch(batch, parts)):
            last = index == parts - 1
            # Gradients are all-reduced only on the last micro-batch. One no_sync() context spans
            # forward and backward: it is a single-use context manager.
            with self.model.no_sync() if self.dist.enabled and not last else nullcontext():
                with autocast(self.dist.device, self.amp_dtype):
                    output: StepOutput = self.model(micro, self.iteration)
                self.scaler.scale(output.loss / parts).backward()
            # Finiteness is checked when the window is read, not here: that would wait for the GPU.
            self.window.add(output.loss, output.logs, self.iteration, 1.0 / parts)
            for key, value in output.logs.items():
                logs[key] = logs.get(key, 0.0) + value / parts
        self.window.end_step()
        return logs

    def step(self, batch: Any) -> dict[str, Tensor | float]:
        """One optimiser step on one (global) batch; returns its logs (micro-batches averaged),
        left on the device: reading them waits for the step to finish."""
        self.model.train()
        batch = move_to(batch, self.dist.device, self.channels_last)
        logs = self._forward_backward(batch)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.iteration += 1
        return logs

    def fit(
        self,
        batches: Iterator[Any],
        until: int,
        after_step: Callable[[int], None] | None = None,
        description: str = "train",
    ) -> None:
        """Train until ``self.iteration == until``, logging, evaluating and checkpointing.

        Logged scalars are means over the ``train.log_every`` steps before each log line; they
        (and the finiteness of the loss) are read from the device only then, and before every
        evaluation, checkpoint and the end, so the steps in between never wait for the device.
        """
        train = self.config.train
        self.logger.start_progress(until, self.iteration, description)
        tick, tick_iteration = time.perf_counter(), self.iteration
        self.window = LogWindow()
        while self.iteration < until:
            self.step(next(batches))
            if after_step is not None:
                after_step(self.iteration)
            for hook in self.step_hooks:
                hook(self.iteration)
            means = None
            if train.log_every and self.iteration % train.log_every == 0:
                means = self.window.read()
                elapsed = time.perf_counter() - tick
                # A window that began with this fit() (resume, new round) is shorter than log_every.
                steps = self.iteration - tick_iteration
                tick, tick_iteration = time.perf_counter(), self.iteration
                self.logger.scalars(
                    self.iteration,
                    {**means, "lr": self.optimizer.param_groups[0]["lr"], "seconds_per_iter": elapsed / steps},
                    prefix="train/",
                )
            self.logger.advance(means)
            # The final evaluation (with its own log record) is the host's, after the last step.
            final = self.iteration == train.iterations
            evaluate = self.evaluate is not None and train.eval_every and self.iteration % train.eval_every == 0 and not final
            save = train.checkpoint_every and self.iteration % train.checkpoint_every == 0
            if evaluate or save or self.iteration == until:
                self.window.check()  # never evaluate or save weights after a non-finite loss
            if evaluate:
                self.run_evaluation()
            if save:
                self.save()
        self.logger.close_progress()

    def run_evaluation(self) -> dict[str, float]:
        """Evaluate the current model and log the results."""
        assert self.evaluate is not None
        results = self.evaluate(self.module, self.iteration)
        self.logger.scalars(self.iteration, results, prefix="val/")
        return results

