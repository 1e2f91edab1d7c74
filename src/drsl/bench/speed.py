"""``drsl bench speed``: what drsl's training step costs next to a plain PyTorch step.

Everything runs in one process on the same batch, with repetitions interleaved (the order rotates
every repetition) so that load from other processes hits every case alike:

- ``floor``: the same encoder and ASPP head driven by a bare loop (normalise, forward, bilinear
  upsampling, cross-entropy, backward, SGD step): no drsl trainer, module or logging;
- ``source_only``: :meth:`drsl.engine.trainer.Trainer.step` with the source-only module;
- ``cbst``: the same with a pseudo-labelled target batch (one forward over source + target);
- ``drsl``: CBST plus the DRSL regulariser (MMDL head and stochastic mode alignment);
- ``inference``: a forward pass of the segmentor in eval mode (images/s);
- ``pseudo_label``: :func:`generate_pseudo_labels` over a small target set (images/s, PNGs written).

Ratios are the medians of the per-repetition ratios (each repetition times every case once), with
their spread. Step peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during one step minus
the memory allocated before it; on CPU a separate process per case builds it, resets the kernel's
peak-RSS mark and reports the peak over two steps minus the RSS before them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from drsl.bench.standalone import report_result, standalone_main
from drsl.commands.help import add_device
from drsl.engine.distributed import wants_cuda

#: Training cases in the order of the table.
TRAIN_CASES = ("floor", "source_only", "cbst", "drsl")
ALL_CASES = (*TRAIN_CASES, "inference", "pseudo_label")
#: The targets the ratios are held to.
TARGETS = {"source_only/floor": 1.10, "drsl/cbst": 1.15}


# ------------------------------------------------------------------------------------ set-up
def make_config(method: str, backbone: str, amp: str, channels_last: bool, light_width: int) -> Any:
    """A drsl config for one case (defaults of the library, the regulariser's included)."""
    from drsl.config import Config

    config = Config()
    config.work_dir = tempfile.gettempdir()
    config.model.backbone = backbone  # type: ignore[assignment]
    config.model.light_width = light_width
    config.model.num_classes = 19  # data.classes: cityscapes19, the paper benchmarks' classes
    config.adapt.method = method  # type: ignore[assignment]
    config.adapt.pseudo_label.fusion = "none"
    config.optim.lr = 1e-3
    config.optim.warmup_iters = 0
    config.train.iterations = 10**9  # a flat learning rate over the benchmark
    config.train.amp = amp  # type: ignore[assignment]
    config.train.channels_last = channels_last
    config.train.checkpoint_every = 0
    config.train.log_every = 0
    return config


def blocky_labels(batch: int, size: tuple[int, int], rng: np.random.Generator, ignore: float) -> torch.Tensor:
    """Train ids in 16-pixel blocks (like real label maps), a fraction ``ignore`` set to 255."""
    h, w = size
    coarse = rng.integers(0, 19, (batch, -(-h // 16), -(-w // 16)))
    coarse[rng.random(coarse.shape) < ignore] = 255
    return torch.from_numpy(np.repeat(np.repeat(coarse, 16, 1), 16, 2)[:, :h, :w].copy()).long()


def make_batch(batch: int, crop: tuple[int, int], seed: int = 0) -> dict[str, Any]:
    """Source images with labels, target images with pseudo-labels (about half ignored)."""
    rng = np.random.default_rng(seed)
    images = lambda: torch.from_numpy(rng.integers(0, 256, (batch, 3, *crop), dtype=np.uint8))  # noqa: E731
    return {
        "source": {"image": images(), "label": blocky_labels(batch, crop, rng, 0.05)},
        "target": {"image": images(), "label": blocky_labels(batch, crop, rng, 0.5)},
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FloorStep:
    """The plain PyTorch step on the same network: no drsl code on the step's path."""

    def __init__(self, config: Any, device: torch.device) -> None:
        from drsl.models.segmentor import build_segmentor

        torch.manual_seed(0)
        net = build_segmentor(config.model)
        self.encoder, self.head = net.encoder.to(device), net.decoder.to(device)
        if config.train.channels_last:
            self.encoder.to(memory_format=torch.channels_last)
            self.head.to(memory_format=torch.channels_last)
        self.mean = torch.tensor(net.encoder.input_norm.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(net.encoder.input_norm.std, device=device).view(1, 3, 1, 1)
        optim = config.optim
        self.optimizer = torch.optim.SGD(
            [{"params": self.encoder.parameters(), "lr": optim.lr},
             {"params": self.head.parameters(), "lr": optim.lr * optim.head_lr_mult}],
            lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
        )
        self.amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.train.amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.train.amp == "fp16")
        self.device, self.channels_last = device, config.train.channels_last

    def modules(self) -> list[torch.nn.Module]:
        return [self.encoder, self.head]

    def __call__(self, batch: dict[str, Any]) -> None:
        images, labels = batch["source"]["image"], batch["source"]["label"]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        x = (images.float() / 255.0 - self.mean) / self.std
        self.encoder.train()
        self.head.train()
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            logits = self.head(self.encoder(x))[0]
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=255)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def make_trainer(method: str, args: argparse.Namespace, device: torch.device) -> Any:
    """A real drsl Trainer around the training module of ``method``."""
    from drsl.engine.distributed import DistInfo
    from drsl.engine.logging import RunLogger
    from drsl.engine.trainer import Trainer
    from drsl.training import build_module

    config = make_config(method, args.backbone, args.amp, args.channels_last, args.light_width)
    torch.manual_seed(0)
    module = build_module(config)
    return Trainer(config, module, DistInfo(device=device), RunLogger(tempfile.gettempdir(), enabled=False))


class PseudoLabelPass:
    """Pseudo-labels for a small Cityscapes-layout target set, into a fresh folder every call."""

    def __init__(self, trainer: Any, args: argparse.Namespace, device: torch.device) -> None:
        from drsl.bench.pipeline import write_cityscapes_like
        from drsl.data.classes import load_class_set
        from drsl.data.registry import build_dataset

        self.tmp = tempfile.TemporaryDirectory(prefix="drsl_bench_pl_")
        root = write_cityscapes_like(Path(self.tmp.name) / "target", "train", args.pseudo_images, tuple(args.crop))
        config = copy.deepcopy(trainer.config)
        config.data.target = type(config.data.source)(layout="cityscapes", root=str(root), split="train")
        self.dataset = build_dataset(config.data.target, load_class_set(config.data.classes), require_labels=False)
        self.config, self.module, self.device = config, trainer.module, device
        self.calls = 0

    def __call__(self, _batch: Any) -> None:
        from drsl.adaptation.pseudo_label_pass import generate_pseudo_labels
        from drsl.engine.distributed import DistInfo

        self.calls += 1
        out = Path(self.tmp.name) / f"run_{self.calls}"
        generate_pseudo_labels(
            self.module, self.dataset, out, self.config, DistInfo(device=self.device), 0.5, 0,
            "none", checkpoint="bench", progress=False,
        )


@dataclass
class Case:
    """One timed case: a function of the batch, the images it processes, what state it holds."""

    fn: Callable[[Any], Any]
    images: int
    modules: list[torch.nn.Module] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None

    def state_megabytes(self) -> float | None:
        """Parameters, buffers and optimizer state of a training case (MB)."""
        if self.optimizer is None:
            return None
        tensors = [t for m in self.modules for t in (*m.parameters(), *m.buffers())]
        tensors += [v for s in self.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def build_cases(args: argparse.Namespace, device: torch.device, only: Sequence[str]) -> dict[str, Case]:
    """The requested cases, each with freshly built (identically initialised) weights."""
    cases: dict[str, Case] = {}
    batch = args.batch
    if "floor" in only:
        floor = FloorStep(make_config("source_only", args.backbone, args.amp, args.channels_last, args.light_width), device)
        cases["floor"] = Case(floor, batch, floor.modules(), floor.optimizer)
    trainers: dict[str, Any] = {}
    for method in ("source_only", "cbst", "drsl"):
        if method in only:
            trainer = trainers[method] = make_trainer(method, args, device)
            if method == "source_only":
                fn: Callable[[Any], Any] = lambda b, step=trainer.step: step({"source": b["source"]})  # noqa: E731
                cases[method] = Case(fn, batch, [trainer.module], trainer.optimizer)
            else:
                cases[method] = Case(trainer.step, 2 * batch, [trainer.module], trainer.optimizer)
    if "inference" in only or "pseudo_label" in only:
        reference = trainers.get("source_only") or make_trainer("source_only", args, device)
    if "inference" in only:
        segmentor = copy.deepcopy(reference.module.segmentor).eval()
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

        @torch.inference_mode()
        def infer(b: dict[str, Any]) -> None:
            images = b["source"]["image"].to(device).float().div_(255.0)
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                segmentor(images)

        cases["inference"] = Case(infer, batch)
    if "pseudo_label" in only:
        cases["pseudo_label"] = Case(PseudoLabelPass(reference, args, device), args.pseudo_images)
    return cases


# ------------------------------------------------------------------------------------ memory
def _proc_status_mb(key: str) -> float | None:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MB; None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _child_memory(case: str, args: argparse.Namespace) -> dict[str, float]:
    """Peak RSS of a fresh process that builds only ``case`` and runs it (see :func:`child_main`)."""
    argv = [
        sys.executable, "-m", "drsl.bench.speed", "--child", case, "--backbone", args.backbone,
        "--crop", *map(str, args.crop), "--batch", str(args.batch), "--device", "cpu",
        "--amp", args.amp, "--light-width", str(args.light_width), "--threads", str(args.threads),
        "--pseudo-images", str(args.pseudo_images),
    ] + (["--channels-last"] if args.channels_last else [])
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(case: str, args: argparse.Namespace) -> int:
    """Build one case, then run it twice; print the resident memory before and the peak during.

    The peak mark is reset after the build, so ``peak_step_mb`` (peak minus resident before the
    steps) is what the steps add: activations, gradients, optimizer state, allocator slack.
    """
    device = torch.device("cpu")
    batch = make_batch(args.batch, tuple(args.crop))
    fn = build_cases(args, device, [case])[case].fn
    before = _proc_status_mb("VmRSS")
    exact = _reset_peak_rss()
    for _ in range(2):
        fn(batch)
    peak = _proc_status_mb("VmHWM") if exact else None
    if peak is None:  # no /proc reset: the process's lifetime peak, imports included
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"resident_before_mb": before, "peak_rss_mb": peak,
                      "peak_step_mb": None if before is None or not exact else peak - before}))
    return 0


# ------------------------------------------------------------------------------------ run
def _spread(values: list[float]) -> dict[str, float]:
    q = np.percentile(values, [25, 50, 75]) if len(values) > 1 else [values[0]] * 3
    return {"median": float(q[1]), "p25": float(q[0]), "p75": float(q[2]), "min": float(min(values)), "max": float(max(values))}


def run_speed_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Build every case, time them interleaved and return the results (see module docstring)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if wants_cuda(args.device) else "cpu")
    crop = tuple(args.crop)
    batch = make_batch(args.batch, crop)
    cases = build_cases(args, device, args.cases)
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    memory: dict[str, float] = {}
    for name in names:  # warm-up (allocator, kernel selection), and CUDA step peaks
        fn = cases[name].fn
        for _ in range(args.warmup):
            fn(batch)
        if device.type == "cuda":
            _sync(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            fn(batch)
            _sync(device)
            memory[name] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    for repeat in range(args.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            fn = cases[name].fn
            _sync(device)
            start = time.perf_counter()
            fn(batch)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    rows: dict[str, Any] = {}
    for name in names:
        images = cases[name].images
        spread = _spread(times[name])
        rows[name] = {
            "seconds": spread,
            "images": images,
            "images_per_s": images / spread["median"],
            "state_mb": cases[name].state_megabytes(),
            "peak_step_mb": memory.get(name),
        }
    if device.type == "cpu" and args.memory:
        for name in names:
            rows[name].update(_child_memory(name, args))
        memory_note = ("CPU: a separate process per case; peak = peak RSS over two steps minus the RSS "
                       "after building the case (activations, gradients, optimizer state)")
    elif device.type == "cuda":
        memory_note = "CUDA: max_memory_allocated during one step minus memory allocated before it"
    else:
        memory_note = "not measured (--no-memory)"
    ratios = {}
    for key in TARGETS:
        top, bottom = key.split("/")
        if top in times and bottom in times:
            per_repeat = [a / b for a, b in zip(times[top], times[bottom])]
            ratios[key] = {**_spread(per_repeat), "target": TARGETS[key], "met": statistics.median(per_repeat) <= TARGETS[key]}
    return {
        "config": {
            "backbone": args.backbone, "light_width": args.light_width if args.backbone == "light" else None,
            "crop": list(crop), "batch": args.batch, "amp": args.amp, "channels_last": args.channels_last,
            "repeats": args.repeats, "warmup": args.warmup, "pseudo_images": args.pseudo_images,
        },
        "environment": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"), "argv": sys.argv,
        },
        "cases": rows,
        "ratios": ratios,
        "memory_note": memory_note,
    }


def format_speed(result: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    cfg, env = result["config"], result["environment"]
    lines = [
        f"drsl bench speed: {cfg['backbone']}, crop {cfg['crop'][0]}x{cfg['crop'][1]}, batch {cfg['batch']} "
        f"(+{cfg['batch']} target for cbst/drsl), amp {cfg['amp']}, {cfg['repeats']} interleaved repeats, "
        f"{env['device']} ({env['device_name']}), {env['torch_threads']} threads",
        f"{'case':14s} {'median ms':>10s} {'p25-p75 ms':>17s} {'img/s':>8s} {'state MB':>9s} {'step peak MB':>12s}",
    ]
    for name, row in result["cases"].items():
        s = row["seconds"]
        peak = row.get("peak_step_mb")
        state = row["state_mb"]
        lines.append(
            f"{name:14s} {1000 * s['median']:10.1f} {1000 * s['p25']:8.1f}-{1000 * s['p75']:<8.1f} "
            f"{row['images_per_s']:8.2f} {'' if state is None else f'{state:.0f}':>9s} "
            f"{'' if peak is None else f'{peak:.0f}':>12s}"
        )
    for key, r in result["ratios"].items():
        verdict = "met" if r["met"] else "MISSED"
        lines.append(
            f"ratio {key:18s} {r['median']:.3f} (p25-p75 {r['p25']:.3f}-{r['p75']:.3f}, "
            f"min {r['min']:.3f}, max {r['max']:.3f}); target <= {r['target']:.2f}: {verdict}"
        )
    lines.append(f"memory: {result['memory_note']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``drsl bench speed``."""
    parser.add_argument("--backbone", default="light", choices=["light", "resnet50", "resnet101"], help="encoder")
    parser.add_argument("--light-width", type=int, default=2, help="width of the light backbone")
    parser.add_argument("--crop", type=int, nargs=2, default=[256, 256], metavar=("H", "W"), help="training crop size")
    parser.add_argument("--batch", type=int, default=2, help="source images per step (cbst/drsl add as many target)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per case, interleaved")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case first")
    add_device(parser)
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="mixed precision")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--cases", nargs="+", default=list(ALL_CASES), choices=ALL_CASES, help="steps timed")
    parser.add_argument("--pseudo-images", type=int, default=4, help="target images per pseudo-label pass")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="CPU: skip the per-case peak-RSS processes")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, optionally write JSON."""
    if args.child:
        if args.threads:
            torch.set_num_threads(args.threads)
        return child_main(args.child, args)
    result = run_speed_benchmark(args)
    return report_result(result, format_speed(result), args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drsl.bench.speed``."""
    return standalone_main("speed", __doc__ or "", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
