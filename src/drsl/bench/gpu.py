"""``drsl bench gpu``: drsl on one GPU at the paper's sizes, in a few minutes, as one JSON file.

Runs ``drsl bench speed`` (:mod:`drsl.bench.speed`) with the paper's settings: the packaged
GTA5 -> Cityscapes configs (DeepLab-v2 ResNet-101, frozen BatchNorm, the DRSL regulariser's
settings), 512x1024 crops, the configs' global batch of 4 source (+ 4 target) images, bf16,
NHWC and cuDNN autotuning (the CUDA defaults), random initial weights. It writes seconds per
iteration, peak GPU memory, operations and host synchronisations per step of a plain PyTorch step,
source-only, CBST and DRSL (and every further entry of ``drsl.bench.cases.METHODS``, such as a new
host), their ratios to the plain step, and images per second of a plain batched forward, of the
evaluation and of the pseudo-labelling pass over generated 2048x1024 Cityscapes-layout images (the
model sees them at 1024x512).

``--tiny`` runs the same code on CPU in seconds (light network, small images): the check CI runs.

    drsl bench gpu --out gpu_bench.json          # one GPU, a few minutes
    drsl bench gpu --tiny --out tiny.json        # anywhere
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import torch

from drsl.bench.cases import ALL_CASES
from drsl.bench.speed import format_speed, run_speed_benchmark
from drsl.bench.standalone import report_result, standalone_main
from drsl.commands import options
from drsl.config import ConfigError

#: The settings of ``drsl bench speed`` for each mode.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "backbone": "resnet101_deeplab", "light_width": 2, "crop": [512, 1024], "batch": 4,
        "eval_size": [1024, 2048], "eval_images": 16, "eval_batch": 0, "workers": 8,
        "repeats": 10, "warmup": 3, "amp": "bf16", "channels_last": "auto", "device": "cuda",
    },
    "tiny": {
        "backbone": "light", "light_width": 1, "crop": [32, 64], "batch": 1,
        "eval_size": [64, 128], "eval_images": 2, "eval_batch": 0, "workers": 0,
        "repeats": 2, "warmup": 1, "amp": "bf16", "channels_last": "auto", "device": "cpu",
    },
}


def speed_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """The ``bench speed`` arguments of the chosen preset."""
    preset = PRESETS["tiny" if args.tiny else "paper"]
    if preset["device"] == "cuda" and not torch.cuda.is_available():
        raise ConfigError("drsl bench gpu: no CUDA GPU is available; --tiny runs the same code on CPU")
    return argparse.Namespace(**preset, cases=list(args.cases), threads=args.threads, memory=False)


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The headline figures: s/it, peak memory, ratios to the plain step, images per second."""
    cases = result["cases"]
    steps = {name: row for name, row in cases.items() if row["kind"] == "step"}
    return {
        "seconds_per_iteration": {name: row["seconds"]["median"] for name, row in steps.items()},
        "peak_step_memory_mb": {name: row.get("peak_step_mb") for name, row in steps.items()},
        "host_syncs_per_step": {name: row.get("syncs") for name, row in steps.items()},
        "ratio_to_plain_step": {
            key.split("/")[0]: ratio["median"] for key, ratio in result["ratios"].items() if key.endswith("/floor")
        },
        "images_per_second": {
            name: row["images_per_s"] for name, row in cases.items() if row["kind"] == "image"
        },
    }


def run(args: argparse.Namespace) -> int:
    """Run the preset, print the table and write the JSON."""
    start = time.perf_counter()
    result = run_speed_benchmark(speed_arguments(args))
    result["summary"] = {**summarise(result), "wall_seconds": time.perf_counter() - start}
    result["mode"] = "tiny" if args.tiny else "paper"
    return report_result(result, format_speed(result), args.out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``drsl bench gpu``."""
    parser.add_argument("--tiny", action="store_true", help="light network, small images, CPU: checks the code in seconds")
    parser.add_argument("--out", default="gpu_bench.json", help="the JSON file written")
    parser.add_argument("--cases", nargs="+", default=list(ALL_CASES), choices=ALL_CASES, help="cases timed")
    parser.add_argument("--threads", type=options.non_negative_int, default=0, help="torch intra-op threads (0: torch's default)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drsl.bench.gpu``."""
    return standalone_main("gpu", __doc__ or "", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
