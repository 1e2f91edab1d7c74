"""Input-pipeline throughput: decode, resize and augmentation at the real dataset sizes.

Writes generated images in the true GTA5 and Cityscapes layouts at their native sizes (GTA5
1914x1052 palette-label PNGs, Cityscapes 2048x1024 ``leftImg8bit``/``gtFine`` PNGs), then times
each stage of a training sample on them (decode, dataset resize, geometric augmentation,
photometric augmentation) and the real DataLoader (``drsl.adaptation.context.batches``) with 0, 1, 2...
workers. Run ``python -m drsl.bench.pipeline --help``.

The writers here are also used by the GPU smoke script and by tests that need data whose labels
are all valid (no ignored pixels, so that per-micro-batch mean losses are comparable).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from drsl.bench.standalone import report_result, standalone_main
from drsl.commands import options
from drsl.data.classes import load_class_set
from drsl.data.labels import IGNORE_INDEX
from drsl.fileio import atomic_write_png

#: The class set of the GTA5 and Cityscapes layouts measured here.
CLASSES = load_class_set("cityscapes19")
#: Cityscapes label ids that map to a class (no pixel of these is ignored).
VALID_IDS: tuple[int, ...] = tuple(raw for raw, c in CLASSES.mapping("cityscapes").values.items() if c != IGNORE_INDEX)

#: Native sizes (height, width) and the paper lineage's resize and crop ([h, w]).
PRESETS: dict[str, dict[str, Any]] = {
    "gta5": {"size": (1052, 1914), "resize": [720, 1280], "crop": [512, 512]},
    "cityscapes": {"size": (1024, 2048), "resize": [512, 1024], "crop": [512, 512]},
}


# ------------------------------------------------------------------------------------ data
def synthetic_image(size: tuple[int, int], rng: np.random.Generator, cell: int = 24) -> np.ndarray:
    """An HxWx3 uint8 image: smooth random colour fields plus mild noise (compresses like a photo,
    about 1.7x with PNG, unlike pure noise which does not compress at all).

    PIL, not OpenCV: a parallel OpenCV call starts OpenCV's thread pool, and a process forked
    after that deadlocks in its first OpenCV call (the generated-benchmark writer forks workers).
    """
    h, w = size
    coarse = rng.integers(0, 256, (max(2, h // cell), max(2, w // cell), 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC)).astype(np.int16)
    image += rng.integers(-6, 7, (h, w, 3), dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def synthetic_label(
    size: tuple[int, int], rng: np.random.Generator, ids: Sequence[int] = VALID_IDS, cell: int = 16
) -> np.ndarray:
    """An HxW uint8 map of Cityscapes label ``ids`` in blocks of ``cell`` pixels."""
    h, w = size
    coarse = rng.choice(np.asarray(ids, dtype=np.uint8), (max(1, -(-h // cell)), max(1, -(-w // cell))))
    return np.ascontiguousarray(np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:h, :w])


def _write_palette(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids)
    image.putpalette(np.resize(CLASSES.palette, (256, 3)).ravel().tolist())
    image.save(path)


def write_gta5_like(
    root: str | Path, n: int, size: tuple[int, int] = PRESETS["gta5"]["size"], seed: int = 0,
    ids: Sequence[int] = VALID_IDS, start: int = 1,
) -> Path:
    """``root/images/%05d.png`` RGB and ``root/labels/%05d.png`` palette label-id PNGs."""
    root, rng = Path(root), np.random.default_rng(seed)
    for i in range(start, start + n):
        atomic_write_png(root / "images" / f"{i:05d}.png", synthetic_image(size, rng))
        _write_palette(root / "labels" / f"{i:05d}.png", synthetic_label(size, rng, ids))
    return root


def write_cityscapes_like(
    root: str | Path, split: str, n: int, size: tuple[int, int] = PRESETS["cityscapes"]["size"],
    seed: int = 0, ids: Sequence[int] = VALID_IDS, cities: Sequence[str] = ("aachen", "bochum"),
) -> Path:
    """``leftImg8bit/SPLIT/CITY/*_leftImg8bit.png`` and ``gtFine/SPLIT/CITY/*_gtFine_labelIds.png``."""
    root, rng = Path(root), np.random.default_rng(seed)
    for i in range(n):
        city = cities[i % len(cities)]
        stem = f"{city}_000000_{i:06d}"
        atomic_write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", synthetic_image(size, rng))
        atomic_write_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", synthetic_label(size, rng, ids))
    return root


def write_benchmark_data(root: str | Path, n: int = 16, seed: int = 0) -> dict[str, Path]:
    """GTA5-layout source and Cityscapes-layout train split at native sizes under ``root``."""
    root = Path(root)
    return {
        "gta5": write_gta5_like(root / "gta5", n, seed=seed),
        "cityscapes": write_cityscapes_like(root / "cityscapes", "train", n, seed=seed + 1),
    }


# ------------------------------------------------------------------------------------ timing
def _time_each(fn: Callable[[int], Any], count: int) -> list[float]:
    """Seconds of ``fn(i)`` for i in 0..count-1."""
    out = []
    for i in range(count):
        start = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - start)
    return out


def _summary(seconds: list[float], images_per_call: int = 1) -> dict[str, float]:
    median = statistics.median(seconds)
    return {
        "ms_per_image": 1000 * median / images_per_call,
        "images_per_s": images_per_call / median if median > 0 else float("inf"),
        "min_ms": 1000 * min(seconds) / images_per_call,
        "max_ms": 1000 * max(seconds) / images_per_call,
        "samples": len(seconds),
    }


def _dataset_config(name: str, root: Path, resize: list[int]) -> Any:
    from drsl.config import DatasetConfig

    layout = "gta5" if name == "gta5" else "cityscapes"
    return DatasetConfig(layout=layout, root=str(root), split="train", resize=resize)


def stage_times(name: str, root: Path, crop: list[int], samples: int) -> dict[str, dict[str, float]]:
    """Per-image cost of each stage of one dataset's training sample (single process)."""
    from drsl.config import AugmentConfig
    from drsl.data.registry import build_dataset
    from drsl.data.transforms import build_train_transform
    from drsl.engine.sampling import SeededView

    preset = PRESETS[name]
    plain = build_dataset(_dataset_config(name, root, None), CLASSES)
    resized = build_dataset(_dataset_config(name, root, preset["resize"]), CLASSES)
    n = len(plain)
    full = SeededView(resized, build_train_transform(AugmentConfig(crop_size=crop)))
    geometric = SeededView(resized, build_train_transform(AugmentConfig(crop_size=crop, photometric=False)))
    image, label = plain.load(0)
    out = {
        "decode_image_and_label": _summary(_time_each(lambda i: plain.load(i % n), samples)),
        "dataset_item_with_resize": _summary(_time_each(lambda i: resized[i % n], samples)),
        "plus_geometric_augment": _summary(_time_each(lambda i: geometric[(i % n, i)], samples)),
        "plus_photometric_augment": _summary(_time_each(lambda i: full[(i % n, i)], samples)),
    }
    # The photometric ops alone, on a crop as the transform sees it.
    from torchvision.transforms import v2

    cfg = AugmentConfig(crop_size=crop)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[:, : crop[0], : crop[1]].contiguous()
    ops = {
        "color_jitter_uint8": v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue),
        "gaussian_blur_uint8": v2.GaussianBlur(5, sigma=(0.1, 2.0)),
        "gaussian_noise_uint8": v2.GaussianNoise(sigma=cfg.noise_std, clip=True),
    }
    for key, op in ops.items():
        out[key] = _summary(_time_each(lambda i, op=op: op(tensor), samples))
    del label
    return out


def loader_throughput(
    name: str, root: Path, crop: list[int], workers: int, batch_size: int, batches: int
) -> dict[str, float]:
    """Images/s of the real training loader (``drsl.adaptation.context.batches``) after its first batch."""
    from drsl.config import AugmentConfig, Config
    from drsl.data.registry import build_dataset
    from drsl.data.transforms import build_train_transform
    from drsl.engine.distributed import DistInfo
    from drsl.engine.sampling import SeededView
    from drsl.adaptation.context import batches as make_batches

    preset = PRESETS[name]
    view = SeededView(
        build_dataset(_dataset_config(name, root, preset["resize"]), CLASSES),
        build_train_transform(AugmentConfig(crop_size=crop)),
    )
    config = Config()
    config.data.batch_size, config.data.num_workers = batch_size, workers
    start = time.perf_counter()
    iterator = make_batches(view, config, 0, 0, DistInfo())
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    steady = time.perf_counter() - start
    del iterator
    return {
        "workers": workers,
        "first_batch_s": first,
        "images_per_s": batches * batch_size / steady,
        "ms_per_image": 1000 * steady / (batches * batch_size),
    }


def run_pipeline_benchmark(
    root: str | Path | None = None, images: int = 16, crop: Sequence[int] = (512, 512),
    workers: Sequence[int] = (0, 1, 2), batch_size: int = 2, batches: int = 8, samples: int = 16,
    datasets: Sequence[str] = ("gta5", "cityscapes"),
) -> dict[str, Any]:
    """Write data (unless ``root`` already holds it), time the stages and the loaders."""
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="drsl_pipeline_")
        root = tmp.name
    root = Path(root)
    try:
        start = time.perf_counter()
        if not (root / "gta5").is_dir():
            write_benchmark_data(root, images)
        written = time.perf_counter() - start
        crop = [int(crop[0]), int(crop[1])]
        result: dict[str, Any] = {
            "crop": crop, "images": images, "batch_size": batch_size, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "write_seconds": written, "datasets": {},
        }
        for name in datasets:
            folder = root / name
            entry = {
                "native_size_hw": list(PRESETS[name]["size"]),
                "resize_hw": PRESETS[name]["resize"],
                "png_bytes_per_image": _mean_png_bytes(folder),
                "stages": stage_times(name, folder, crop, samples),
                "loader": [
                    loader_throughput(name, folder, crop, w, batch_size, batches) for w in workers
                ],
            }
            result["datasets"][name] = entry
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def _mean_png_bytes(folder: Path) -> float:
    files = [p for p in folder.rglob("*.png") if "labels" not in p.parts and "gtFine" not in p.parts]
    return float(np.mean([p.stat().st_size for p in files])) if files else 0.0


def format_pipeline(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`run_pipeline_benchmark` output."""
    lines = [f"crop {result['crop']}, batch {result['batch_size']}, torch threads {result['threads']}"]
    for name, entry in result["datasets"].items():
        lines.append(
            f"\n{name}: native {entry['native_size_hw']} -> resize {entry['resize_hw']}, "
            f"{entry['png_bytes_per_image'] / 1e6:.2f} MB/PNG"
        )
        lines.append(f"  {'stage (cumulative)':34s} {'ms/img':>8s} {'img/s':>8s} {'min':>7s} {'max':>7s}")
        for stage, s in entry["stages"].items():
            lines.append(
                f"  {stage:34s} {s['ms_per_image']:8.1f} {s['images_per_s']:8.1f} "
                f"{s['min_ms']:7.1f} {s['max_ms']:7.1f}"
            )
        for row in entry["loader"]:
            lines.append(
                f"  DataLoader workers={row['workers']}: {row['images_per_s']:6.1f} img/s "
                f"({row['ms_per_image']:.0f} ms/img; first batch {row['first_batch_s']:.2f} s)"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``drsl bench pipeline``."""
    parser.add_argument("--root", help="folder with (or for) the generated data; default a temp dir")
    parser.add_argument("--images", type=options.count, default=16, help="images written per dataset")
    parser.add_argument("--crop", type=options.count, nargs=2, default=[512, 512], metavar=("H", "W"), help="training crop size")
    parser.add_argument("--workers", type=options.non_negative_int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts compared")
    parser.add_argument("--batch", type=options.count, default=2, help="images per loader batch")
    parser.add_argument("--batches", type=options.count, default=8, help="timed loader batches per setting")
    parser.add_argument("--samples", type=options.count, default=16, help="timed samples per stage")
    parser.add_argument("--datasets", nargs="+", default=["gta5", "cityscapes"], choices=sorted(PRESETS),
                        help="dataset layouts and sizes measured")
    parser.add_argument("--threads", type=options.non_negative_int, default=1,
                        help="torch threads of this process (DataLoader workers always use 1); 0: torch's default")
    parser.add_argument("--json", help="write the results here")


def run(args: argparse.Namespace) -> int:
    """Run the pipeline benchmark and print the table."""
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_pipeline_benchmark(
        args.root, args.images, args.crop, args.workers, args.batch, args.batches, args.samples,
        args.datasets,
    )
    return report_result(result, format_pipeline(result), args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drsl.bench.pipeline``."""
    return standalone_main("pipeline", __doc__ or "", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
