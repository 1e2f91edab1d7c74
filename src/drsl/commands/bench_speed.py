"""``drsl bench``: speed (trainer step vs a plain PyTorch step), input pipeline, networks, memory,
GPU smoke.

    drsl bench speed --backbone light --crop 128 128 --batch 8 --json speed.json
    drsl bench pipeline --workers 0 1 2
    drsl bench networks --threads 1 --batch 16 --crops 128x128
    drsl bench memory gta5_cityscapes/daformer_source_only --crops 128x128 256x256
    drsl bench gpu                  # minutes on one GPU, writes gpu_bench.json;  --tiny: CPU check
    drsl bench gpu-smoke            # ~5 min on one GPU;  --tiny: a CPU check of the code path
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable


def _arguments(module: str) -> Callable[[argparse.ArgumentParser], None]:
    """Adds the arguments of ``drsl.bench.<module>`` (imported, with torch, only when used)."""
    return lambda parser: importlib.import_module(f"drsl.bench.{module}").add_arguments(parser)


def add_actions(bench_actions: argparse._SubParsersAction) -> None:
    """Add ``speed``, ``pipeline``, ``networks``, ``memory``, ``gpu`` and ``gpu-smoke`` to ``drsl bench``."""
    for name, module, text in (
        ("speed", "speed", "drsl source-only/CBST/DRSL steps next to a plain PyTorch step, interleaved"),
        ("pipeline", "pipeline", "decode/resize/augment throughput at GTA5 and Cityscapes sizes"),
        ("networks", "networks", "training-step time of backbone/stride/decoder variants side by side (CPU operating point)"),
        ("memory", "memory", "peak memory of a config's training step, traced on CPU at small crops and scaled up"),
        ("gpu", "gpu", "one JSON of s/it, memory and ratios at the paper's sizes on one GPU, minutes (--tiny: CPU check)"),
        ("gpu-smoke", "gpu_smoke", "DRSL, ResNet-101, paper sizes, bf16, a few hundred iterations (--tiny: CPU check)"),
    ):
        bench_actions.add_parser(name, help=text, populate=_arguments(module))


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen benchmark (``args.bench_command``)."""
    from drsl.bench import gpu, gpu_smoke, memory, networks, pipeline, speed

    module = {
        "speed": speed, "pipeline": pipeline, "networks": networks, "memory": memory, "gpu": gpu,
        "gpu-smoke": gpu_smoke,
    }[args.bench_command]
    return module.run(args)
