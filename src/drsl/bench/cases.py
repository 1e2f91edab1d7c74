"""The timed cases of ``drsl bench speed`` and ``drsl bench gpu``, built from the packaged configs.

Every training case is the packaged ``gta5_cityscapes/<method>`` config (frozen BatchNorm, the
DRSL regulariser's settings, the pseudo-label fusion) with the network, precision, memory layout,
crop and batch of the command line, random initial weights (seeded alike) and a flat learning rate:

- ``floor``: the same network driven by a bare PyTorch loop (forward, bilinear upsampling,
  cross-entropy, backward, SGD step): no drsl trainer, module or logging;
- one case per entry of :data:`METHODS`: :meth:`drsl.engine.trainer.Trainer.step` of that method
  (source-only on the source batch, the others on source + pseudo-labelled target);
- ``forward``: a plain batched forward of the segmentor at the evaluation input size, inputs
  already on the device: the reference of the two cases below;
- ``evaluation``: :func:`drsl.evaluation.evaluate.evaluate` over generated Cityscapes-layout
  images (decoding, resize, batched forward, upsampling to label size, argmax, confusion matrix);
- ``pseudo_label``: :func:`generate_pseudo_labels` of the DRSL module over generated target images.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from drsl.config import Config
from drsl.engine.trainer import AMP_DTYPES, autocast

#: Training methods timed against the floor: name -> (packaged config, extra overrides). A new
#: host or method is one line here (e.g. the mixing host: ``"mix": ("gta5_cityscapes/drsl",
#: ["adapt.host=mix"])``); its step must take the ``{"source", "target"}`` batch.
METHODS: dict[str, tuple[str, list[str]]] = {
    "source_only": ("gta5_cityscapes/source_only", []),
    "cbst": ("gta5_cityscapes/cbst", []),
    "drsl": ("gta5_cityscapes/drsl", []),
}
INFERENCE_CASES = ("forward", "evaluation", "pseudo_label")
ALL_CASES = ("floor", *METHODS, *INFERENCE_CASES)


def make_config(method: str, args: argparse.Namespace, data: Path | None = None) -> Config:
    """The packaged config of ``method`` with the benchmark's network, sizes and a flat LR.

    ``data`` (see :func:`write_eval_data`) holds the generated evaluation and target images.
    """
    from drsl.config import load_config
    from drsl.configs import resolve_config_path
    from drsl.data.classes import bind_class_set

    path, extra = METHODS[method]
    crop = f"[{args.crop[0]},{args.crop[1]}]"
    eval_resize = f"[{args.eval_size[0] // 2},{args.eval_size[1] // 2}]"
    overrides = [
        "init_checkpoint=null", "model.pretrained=null", f"model.backbone={args.backbone}",
        f"model.light_width={args.light_width}", f"train.amp={args.amp}",
        f"train.channels_last={args.channels_last}", "optim.warmup_iters=0",
        "train.iterations=1000000000", "train.checkpoint_every=0", "train.log_every=0",
        f"work_dir={tempfile.gettempdir()}", f"data.batch_size={args.batch}",
        f"data.source_augment.crop_size={crop}", f"data.target_augment.crop_size={crop}",
        f"eval.resize={eval_resize}", f"data.num_workers={args.workers}",
        *([f"eval.batch_size={args.eval_batch}"] if args.eval_batch else []),
    ]
    if data is not None:
        overrides += [
            f"data.val.root={data}", f"data.target.root={data}", f"data.target.resize={eval_resize}",
        ]
    config = load_config(resolve_config_path(path), [*overrides, *extra])
    bind_class_set(config)
    return config


def blocky_labels(batch: int, size: tuple[int, int], rng: np.random.Generator, ignore: float) -> torch.Tensor:
    """Train ids in 16-pixel blocks (like real label maps), a fraction ``ignore`` set to 255."""
    h, w = size
    coarse = rng.integers(0, 19, (batch, -(-h // 16), -(-w // 16)))
    coarse[rng.random(coarse.shape) < ignore] = 255
    return torch.from_numpy(np.repeat(np.repeat(coarse, 16, 1), 16, 2)[:, :h, :w].copy()).long()


def make_batch(batch: int, crop: tuple[int, int], seed: int = 0) -> dict[str, Any]:
    """Source images with labels, target images with pseudo-labels (about half ignored), on the host."""
    rng = np.random.default_rng(seed)
    images = lambda: torch.from_numpy(rng.integers(0, 256, (batch, 3, *crop), dtype=np.uint8))  # noqa: E731
    return {
        "source": {"image": images(), "label": blocky_labels(batch, crop, rng, 0.05)},
        "target": {"image": images(), "label": blocky_labels(batch, crop, rng, 0.5)},
    }


def write_eval_data(root: Path, images: int, size: Sequence[int]) -> Path:
    """Generated Cityscapes-layout ``val`` (labelled) and ``train`` (target) images at ``size``."""
    from drsl.bench.pipeline import write_cityscapes_like

    write_cityscapes_like(root, "val", images, (int(size[0]), int(size[1])), seed=2)
    write_cityscapes_like(root, "train", images, (int(size[0]), int(size[1])), seed=3)
    return root


def _channels_last(config: Config, device: torch.device) -> bool:
    from drsl.engine.trainer import conv_settings

    return conv_settings(config.train, device)[0]


class FloorStep:
    """The plain PyTorch step on the same network: no drsl code on the step's path."""

    def __init__(self, config: Config, device: torch.device) -> None:
        from drsl.models.segmentor import build_model

        torch.manual_seed(0)
        self.net = build_model(config.model).to(device)
        self.channels_last = _channels_last(config, device)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        optim = config.optim
        self.optimizer = torch.optim.SGD(
            [{"params": self.net.encoder_parameters(), "lr": optim.lr},
             {"params": self.net.head_parameters(), "lr": optim.lr * optim.head_lr_mult}],
            lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
        )
        self.amp = AMP_DTYPES.get(config.train.amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.train.amp == "fp16")
        self.device = device

    def __call__(self, batch: dict[str, Any]) -> None:
        images = batch["source"]["image"].to(self.device, non_blocking=True)
        labels = batch["source"]["label"].to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        self.net.train()
        with autocast(self.device, self.amp):
            logits = self.net(images.float() / 255.0).logits
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=255)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def make_trainer(method: str, args: argparse.Namespace, device: torch.device, data: Path | None = None) -> Any:
    """A real drsl Trainer around the training module of ``method``."""
    from drsl.engine.distributed import DistInfo
    from drsl.engine.logging import RunLogger
    from drsl.engine.trainer import Trainer
    from drsl.training import build_module

    config = make_config(method, args, data)
    torch.manual_seed(0)
    return Trainer(config, build_module(config), DistInfo(device=device), RunLogger(tempfile.gettempdir(), enabled=False))


@dataclass
class Case:
    """One timed case: a function of the batch, the images it processes, what state it holds."""

    fn: Callable[[Any], Any]
    images: int
    #: "step": a training step (ratios of step times); "image": throughput (ratios per image).
    kind: str = "step"
    modules: list[torch.nn.Module] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None

    def state_megabytes(self) -> float | None:
        """Parameters, buffers and optimizer state of a training case (MB)."""
        if self.optimizer is None:
            return None
        tensors = [t for m in self.modules for t in (*m.parameters(), *m.buffers())]
        tensors += [v for s in self.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors) / 2**20


class EvaluationPass:
    """``evaluate`` of a segmentor over the generated val images, as a training run evaluates."""

    def __init__(self, segmentor: torch.nn.Module, config: Config, device: torch.device) -> None:
        from drsl.data.classes import load_class_set
        from drsl.data.registry import build_dataset
        from drsl.engine.distributed import DistInfo
        from drsl.evaluation.evaluate import config_prob_fn

        assert config.data.val is not None
        self.classes = load_class_set(config.data.classes)
        self.dataset = build_dataset(config.data.val, self.classes)
        self.prob_fn = config_prob_fn(segmentor, config, device)
        self.config, self.dist = config, DistInfo(device=device)

    def __call__(self, _batch: Any) -> None:
        from drsl.evaluation.evaluate import evaluate

        evaluate(self.prob_fn, self.dataset, self.config.eval, self.dist, self.classes,
                 num_workers=self.config.data.num_workers)


class PseudoLabelPass:
    """Pseudo-labels of the generated target images by a training module, a fresh folder each call."""

    def __init__(self, trainer: Any, device: torch.device) -> None:
        from drsl.data.classes import load_class_set
        from drsl.data.registry import build_dataset

        self.tmp = tempfile.TemporaryDirectory(prefix="drsl_bench_pl_")
        self.config, self.module, self.device = trainer.config, trainer.module, device
        assert self.config.data.target is not None
        classes = load_class_set(self.config.data.classes)
        self.dataset = build_dataset(self.config.data.target, classes, require_labels=False)
        self.calls = 0

    def __call__(self, _batch: Any) -> None:
        from drsl.adaptation.pseudo_label_pass import generate_pseudo_labels
        from drsl.engine.distributed import DistInfo

        self.calls += 1
        generate_pseudo_labels(
            self.module, self.dataset, Path(self.tmp.name) / f"run_{self.calls}", self.config,
            DistInfo(device=self.device), 0.5, 1, self.config.adapt.pseudo_label.fusion,
            checkpoint="bench", progress=False,
        )


def forward_case(segmentor: torch.nn.Module, config: Config, device: torch.device) -> Case:
    """A plain batched forward at the evaluation input size (``eval.resize``), inputs on the device."""
    assert config.eval.resize is not None
    batch = config.eval.batch_size
    images = torch.rand(batch, 3, *config.eval.resize, device=device)
    if _channels_last(config, device):
        images = images.contiguous(memory_format=torch.channels_last)
    amp = AMP_DTYPES.get(config.train.amp)

    @torch.inference_mode()
    def forward(_batch: Any) -> None:
        with autocast(device, amp):
            segmentor(images)

    return Case(forward, batch, kind="image")


def build_cases(args: argparse.Namespace, device: torch.device, only: Sequence[str], data: Path) -> dict[str, Case]:
    """The requested cases (in :data:`ALL_CASES` order), freshly built and identically initialised."""
    cases: dict[str, Case] = {}
    if "floor" in only:
        floor = FloorStep(make_config("source_only", args, data), device)
        cases["floor"] = Case(floor, args.batch, "step", [floor.net], floor.optimizer)
    trainers: dict[str, Any] = {}
    for method in METHODS:
        if method in only:
            trainer = trainers[method] = make_trainer(method, args, device, data)
            if method == "source_only":
                fn: Callable[[Any], Any] = lambda b, step=trainer.step: step({"source": b["source"]})  # noqa: E731
                cases[method] = Case(fn, args.batch, "step", [trainer.module], trainer.optimizer)
            else:
                cases[method] = Case(trainer.step, 2 * args.batch, "step", [trainer.module], trainer.optimizer)
    if any(name in only for name in INFERENCE_CASES):
        # The DRSL module: its segmentor for evaluation, itself (MMDL fusion) for pseudo-labels.
        reference = trainers.get("drsl") or make_trainer("drsl", args, device, data)
        segmentor = copy.deepcopy(reference.module.segmentor).eval()
        config = reference.config
        if "forward" in only:
            cases["forward"] = forward_case(segmentor, config, device)
        if "evaluation" in only:
            cases["evaluation"] = Case(EvaluationPass(segmentor, config, device), args.eval_images, "image")
        if "pseudo_label" in only:
            cases["pseudo_label"] = Case(PseudoLabelPass(reference, device), args.eval_images, "image")
    return cases
