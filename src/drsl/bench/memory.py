"""Peak memory of one training step, estimated on CPU: a trace at small crops, scaled up.

For a packaged config (or YAML) and overrides, the real training module and ``Trainer`` (its
optimiser, AMP setting, EMA teacher and DRSL regulariser included) take two steps on random
images at each ``--crops`` size while :class:`LiveTensorBytes` counts the bytes of every live
tensor storage (weights, buffers, gradients, optimiser state, activations, temporaries) and their
peak. Everything but the weight-sized state grows with the pixels of a crop, so the peaks are
fitted with ``a + b * pixels`` (least squares) and the fit is read at ``--target`` (the residuals
show how linear it is). Like ``torch.cuda.max_memory_allocated`` it counts tensor bytes: it leaves
out the CUDA context, cuDNN workspaces, buffers private to fused kernels and the caching
allocator's fragmentation, and CPU autocast casts a slightly different set of ops than CUDA's.

    python -m drsl.bench.memory gta5_cityscapes/daformer_source_only --crops 64x64 96x96 128x128
"""

from __future__ import annotations

import argparse
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from drsl.bench.standalone import report_result, standalone_main
from drsl.commands import options


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of the live tensor storages (CPU), counted from ``existing`` and every op's outputs."""

    def __init__(self, existing: Iterable[torch.Tensor]) -> None:
        super().__init__()
        self.sizes: dict[int, int] = {}
        self.current = self.peak = 0
        for tensor in existing:
            self.track(tensor)

    def track(self, tensor: torch.Tensor) -> None:
        """Count a tensor's storage once, until the storage is freed."""
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self.sizes:
            return
        self.sizes[key] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.sizes.pop(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.track(leaf)
        return out


def random_batch(batch: int, crop: tuple[int, int], num_classes: int) -> dict[str, Any]:
    """Source images with labels and target images (their labels only give the label size)."""
    gen = torch.Generator().manual_seed(0)

    def part() -> dict[str, torch.Tensor]:
        return {
            "image": torch.randint(0, 256, (batch, 3, *crop), dtype=torch.uint8, generator=gen),
            "label": torch.randint(0, num_classes, (batch, *crop), generator=gen),
        }

    return {"source": part(), "target": part()}


def trace_step(config: Any, crop: tuple[int, int]) -> dict[str, float]:
    """MiB of live tensors over two training steps at ``crop``: weights and buffers before (EMA
    teacher and frozen encoders included), the state kept between steps (weights, optimiser
    state, the batch) after, and the peak."""
    from drsl.engine.distributed import DistInfo
    from drsl.engine.logging import RunLogger
    from drsl.engine.trainer import Trainer
    from drsl.training import build_module

    torch.manual_seed(config.seed)
    module = build_module(config)
    trainer = Trainer(config, module, DistInfo(device=torch.device("cpu")), RunLogger(tempfile.gettempdir(), enabled=False))
    batch = random_batch(config.data.batch_size, crop, config.model.num_classes)
    # The mixing host keeps its frozen ImageNet encoder (feature distance) outside the module tree.
    modules = [trainer.module, *filter(None, [getattr(trainer.module, "imagenet", None)])]
    with LiveTensorBytes([t for m in modules for t in (*m.parameters(), *m.buffers())]) as live:
        weights = live.current
        for tensor in tree_leaves(batch):
            live.track(tensor)
        for _ in range(2):
            trainer.step(batch)
    return {"weights": weights / 2**20, "between_steps": live.current / 2**20, "peak": live.peak / 2**20}


def fit_linear(pixels: list[int], peaks: list[float], target: int) -> dict[str, Any]:
    """Least-squares ``a + b * pixels``, its value at ``target`` and the residuals (MiB)."""
    b, a = np.polyfit(np.asarray(pixels, float), np.asarray(peaks, float), 1)
    residuals = [p - (a + b * x) for x, p in zip(pixels, peaks)]
    return {"intercept_mb": a, "mb_per_megapixel": b * 1e6, "target_mb": a + b * target, "residuals_mb": residuals}


def _crop(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m drsl.bench.memory``."""
    parser.add_argument("config", help="packaged config name or YAML path")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    parser.add_argument("--crops", nargs="+", default=["64x64", "96x96", "128x128"],
                        help="HxW crops traced on CPU")
    parser.add_argument("--target", type=_crop, default="512x512", help="HxW crop to estimate")
    parser.add_argument("--threads", type=options.non_negative_int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    """Trace every crop, fit, print the table."""
    from drsl.config import load_config
    from drsl.configs import resolve_config_path

    torch.set_num_threads(args.threads)
    config = load_config(resolve_config_path(args.config), args.overrides)
    config.train.checkpoint_every = config.train.log_every = 0
    crops = [_crop(text) for text in args.crops]
    rows = [{"crop": list(crop), "pixels": crop[0] * crop[1], **trace_step(config, crop)} for crop in crops]
    target = args.target[0] * args.target[1]
    fit = fit_linear([r["pixels"] for r in rows], [r["peak"] for r in rows], target)
    categories = [k for k in rows[0] if k not in ("crop", "pixels")]
    lines = [
        f"{args.config} {' '.join(args.overrides)}: batch {config.data.batch_size} source"
        f"{' + target' if config.adapt.method != 'source_only' else ''}, amp {config.train.amp}; "
        "MiB of live tensors over two steps (CPU)",
        "| crop | " + " | ".join(categories) + " |",
        "|---" * (len(categories) + 1) + "|",
        *(f"| {r['crop'][0]}x{r['crop'][1]} | " + " | ".join(f"{r[c]:.0f}" for c in categories) + " |" for r in rows),
        f"fit: {fit['intercept_mb']:.0f} MiB + {fit['mb_per_megapixel']:.0f} MiB per megapixel of crop; "
        f"residuals {', '.join(f'{x:+.1f}' for x in fit['residuals_mb'])} MiB",
        f"estimated peak at {args.target[0]}x{args.target[1]}: {fit['target_mb'] / 1024:.2f} GiB",
    ]
    result = {"config": args.config, "overrides": args.overrides, "rows": rows, "fit": fit, "target": list(args.target)}
    return report_result(result, "\n".join(lines), args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drsl.bench.memory``."""
    return standalone_main("memory", __doc__ or "", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
