"""Training-step time of segmentation networks side by side: the CPU operating point.

Each variant is a set of ``model.*`` overrides (backbone, output stride, decoder...), run with and
without channels_last at each crop size. One training step = normalise, forward, bilinear upsampling
to label size, cross-entropy, backward, SGD step, on random images and labels. Variants are
interleaved round by round and the median per variant is reported, so ratios compare like with
like. Besides wall time it reports the process CPU time of the step: with one thread that is the
wall time an idle core would take, and it stays meaningful on a machine shared with other jobs.
Run ``python -m drsl.bench.networks --help`` or ``drsl bench networks``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from drsl.bench.standalone import report_result, standalone_main
from drsl.commands import options
from drsl.config import Config, apply_overrides

#: The grid of the operating-point table in BENCHMARKS.md.
DEFAULT_VARIANTS = (
    "backbone=light",
    "backbone=efficientnet_lite0,output_stride=8,decoder=aspp",
    "backbone=efficientnet_lite0,output_stride=8,decoder=deeplabv3plus",
    "backbone=efficientnet_lite0,output_stride=16,decoder=aspp",
    "backbone=efficientnet_lite0,output_stride=16,decoder=deeplabv3plus",
    "backbone=efficientnet_lite0,output_stride=32,decoder=aspp",
    "backbone=efficientnet_lite0,output_stride=32,decoder=deeplabv3plus",
)


class NetworkStep:
    """One variant's network, optimizer and fixed batch; calling it runs one training step."""

    def __init__(self, overrides: str, channels_last: bool, crop: tuple[int, int], batch: int) -> None:
        from drsl.data.classes import bind_class_set
        from drsl.models.segmentor import build_model

        config = apply_overrides(Config(), [f"model.{item}" for item in overrides.split(",")])
        bind_class_set(config)
        torch.manual_seed(0)
        self.net = build_model(config.model).train()
        self.images = torch.rand(batch, 3, *crop)
        self.labels = torch.randint(0, config.model.num_classes, (batch, *crop))
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        trained = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(trained, lr=1e-3, momentum=0.9)
        self.parameters = sum(p.numel() for p in self.net.parameters())

    def __call__(self) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of one training step."""
        start, cpu_start = time.perf_counter(), time.process_time()
        logits = self.net(self.images).logits
        logits = F.interpolate(logits, size=self.labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start, time.process_time() - cpu_start


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Median step time of every (variant, channels_last, crop), interleaved over ``args.rounds``."""
    torch.set_num_threads(args.threads)
    layouts = {"off": [False], "on": [True], "both": [False, True]}[args.channels_last]
    cases = [
        {"variant": v, "channels_last": cl, "crop": list(crop)}
        for crop in args.crops for v in args.variants for cl in layouts
    ]
    steps = [NetworkStep(c["variant"], c["channels_last"], tuple(c["crop"]), args.batch) for c in cases]
    times: list[list[tuple[float, float]]] = [[] for _ in cases]
    for round_index in range(args.warmup + args.rounds):
        for step, seen in zip(steps, times):
            elapsed = step()
            if round_index >= args.warmup:
                seen.append(elapsed)
    for case, step, seen in zip(cases, steps, times):
        case.update(
            parameters=step.parameters, rounds=len(seen),
            step_s=statistics.median(w for w, _ in seen), cpu_s=statistics.median(c for _, c in seen),
        )
    return cases


def format_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """A markdown table; ``x first row`` is each step's CPU time over the first row's."""
    lines = [
        f"threads {args.threads}, batch {args.batch}, median of {args.rounds} interleaved rounds "
        f"after {args.warmup} warm-up",
        "| network (model.*) | channels_last | crop | params (M) | step wall (s) | step CPU (s) | x first row |",
        "|---|---|---|---|---|---|---|",
    ]
    base = rows[0]["cpu_s"]
    for r in rows:
        crop = "x".join(map(str, r["crop"]))
        lines.append(
            f"| {r['variant']} | {'on' if r['channels_last'] else 'off'} | {crop} | "
            f"{r['parameters'] / 1e6:.2f} | {r['step_s']:.3f} | {r['cpu_s']:.3f} | {r['cpu_s'] / base:.1f} |"
        )
    return "\n".join(lines)


def _crop(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``drsl bench networks``."""
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        help="comma-separated model.* overrides per network (default: the BENCHMARKS.md grid)")
    parser.add_argument("--channels-last", choices=["off", "on", "both"], default="both",
                        help="memory layout of every variant (default: both)")
    parser.add_argument("--crops", nargs="+", type=_crop, default=[(128, 128)],
                        help="HxW crop sizes, e.g. 128x128 96x96 (default: 128x128)")
    parser.add_argument("--batch", type=options.count, default=16, help="images per step (default: 16)")
    parser.add_argument("--threads", type=options.non_negative_int, default=1, help="torch intra-op threads (default: 1)")
    parser.add_argument("--warmup", type=options.non_negative_int, default=1, help="untimed rounds first (default: 1)")
    parser.add_argument("--rounds", type=options.count, default=3, help="timed rounds; the median is reported (default: 3)")
    parser.add_argument("--json", help="also write the rows as JSON here (default: none)")


def run(args: argparse.Namespace) -> int:
    """Measure and print the table."""
    rows = measure(args)
    return report_result({"rows": rows, "threads": args.threads, "batch": args.batch}, format_table(rows, args), args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drsl.bench.networks``."""
    return standalone_main("networks", __doc__ or "", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
