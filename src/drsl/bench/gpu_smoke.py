"""GPU smoke run (about 5 minutes on one H100/H200): DRSL at the paper's sizes, end to end.

Writes a handful of generated images in the GTA5 (1914x1052) and Cityscapes (2048x1024) layouts,
then runs the packaged ``gta5_cityscapes/drsl`` config on them, shortened to 200 iterations and
started from random weights whose BatchNorm statistics are calibrated on a few of the generated
source and target images, trained at a small learning rate (``--random-lr``; with the default
statistics, mean 0 and variance 1, a random ResNet-101 with frozen BatchNorm blows up: features of
standard deviation in the thousands, a non-finite loss in the first steps);
``--pretrained`` starts from an ImageNet/DeepLab init file at the config's rate instead. DeepLab-v2
ResNet-101, bf16 autocast, GTA5 resized to 1280x720 and Cityscapes to 1024x512, 512x1024 crops,
the config's global batch (4 source + 4 target), frozen BatchNorm, the rounds host with its three
pseudo-labelling passes, and a final evaluation. It prints seconds per iteration (median of the
logged windows, so loader start-up and pseudo-labelling are excluded), the peak GPU memory, and
writes ``smoke.json`` in the output folder.

``--tiny`` runs the same code path on CPU in seconds (light backbone, small images) to check it.

    python -m drsl.bench.gpu_smoke                      # on a GPU machine
    python -m drsl.bench.gpu_smoke --tiny               # anywhere
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from drsl.bench.pipeline import write_cityscapes_like, write_gta5_like
from drsl.bench.standalone import standalone_main
from drsl.commands import options
from drsl.commands.help import add_device

#: Native image sizes [h, w] written, and for ``--tiny`` the resize and crop used instead of the
#: config's (GTA5 1280x720, Cityscapes 1024x512, crop 512x1024).
SIZES: dict[str, dict[str, Any]] = {
    "full": {"gta5": (1052, 1914), "cityscapes": (1024, 2048)},
    "tiny": {
        "gta5": (53, 96), "cityscapes": (48, 96),
        "gta5_resize": [36, 64], "cityscapes_resize": [32, 64], "crop": [32, 64],
    },
}


def write_data(root: Path, tiny: bool, images: int) -> None:
    """GTA5-layout source, Cityscapes-layout train (target) and val splits."""
    sizes = SIZES["tiny" if tiny else "full"]
    write_gta5_like(root / "gta5", images, sizes["gta5"], seed=0)
    write_cityscapes_like(root / "cityscapes", "train", images, sizes["cityscapes"], seed=1)
    write_cityscapes_like(root / "cityscapes", "val", 2, sizes["cityscapes"], seed=2)


#: Learning rate of a run from random weights. The configs' rate (1e-4, heads 10x) made a random
#: ResNet-101 with calibrated frozen BatchNorm diverge in two steps on CPU (source loss 4.7, 3591,
#: 14968); at 1e-6 it stayed between 4.7 and 19 (see docs/scaling.md).
RANDOM_LR = 1e-6

#: The packaged config the smoke run starts from (the paper lineage's GTA5 -> Cityscapes DRSL).
CONFIG = "gta5_cityscapes/drsl"


def smoke_overrides(args: argparse.Namespace, data: Path, work: Path) -> list[str]:
    """Overrides of the packaged GTA5 -> Cityscapes DRSL config for the smoke run.

    Full size keeps the config's resize, crop, batch, BatchNorm and regulariser settings and only
    points it at the generated data, starts from random weights and shortens the schedule.
    """
    out = [
        f"work_dir={work}", "name=gpu_smoke", "init_checkpoint=null",
        f"data.source.root={data / 'gta5'}", f"data.target.root={data / 'cityscapes'}",
        f"data.val.root={data / 'cityscapes'}",
        f"train.iterations={args.iterations}", f"train.amp={args.amp}",
        f"train.log_every={1 if args.tiny else 10}", f"train.checkpoint_every={args.iterations}",
        "train.eval_every=0",
    ]
    if args.batch:
        out.append(f"data.batch_size={args.batch}")
    if args.workers is not None:
        out.append(f"data.num_workers={args.workers}")
    if args.tiny:
        sizes = SIZES["tiny"]
        out += [
            f"data.source.resize={sizes['gta5_resize']}", f"data.target.resize={sizes['cityscapes_resize']}",
            f"data.source_augment.crop_size={sizes['crop']}", f"data.target_augment.crop_size={sizes['crop']}",
            f"eval.resize={sizes['cityscapes_resize']}", "model.backbone=light", "model.light_width=1",
        ]
        if not args.batch:
            out.append("data.batch_size=2")
        if args.workers is None:
            out.append("data.num_workers=0")
    else:
        out.append(f"model.backbone={args.backbone}")
    out.append(f"model.pretrained={args.pretrained or 'null'}")  # random weights unless a file is given
    return out + list(args.overrides)


def calibrated_init(config: Any, path: Path, device: str, images: int = 4) -> Path:
    """An init checkpoint of random weights (seeded by the config) whose BatchNorm statistics are
    the average over ``images`` source and as many target images (the forward sees both), saved
    with the keys of the model the run builds."""
    from drsl.data.classes import bind_class_set
    from drsl.data.registry import build_dataset
    from drsl.engine.checkpoint import save_checkpoint
    from drsl.models.batchnorm import calibrate_batchnorm
    from drsl.models.segmentor import build_model, build_segmentor

    classes = bind_class_set(config)
    model_cfg = dataclasses.replace(config.model, pretrained=None)
    torch.manual_seed(config.seed)
    segmentor = build_segmentor(model_cfg).to(device)
    sets = [build_dataset(config.data.source, classes), build_dataset(config.data.target, classes, require_labels=False)]
    calibrate_batchnorm(segmentor, (
        data[i]["image"][None].to(device).float().div_(255.0) for data in sets for i in range(min(images, len(data)))
    ))
    keys = build_model(model_cfg).state_dict().keys()  # frozen BatchNorm keeps no batch counter
    state = {f"segmentor.{k}": v.cpu() for k, v in segmentor.state_dict().items() if k in keys}
    save_checkpoint(path, {"model": state})
    return path


def seconds_per_iteration(work: Path) -> list[float]:
    """The ``train/seconds_per_iter`` of every logged window, in order."""
    values = []
    path = work / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "train/seconds_per_iter" in record:
                values.append(float(record["train/seconds_per_iter"]))
    return values


def run_smoke(args: argparse.Namespace) -> dict[str, Any]:
    """Write the data, train, and summarise speed and memory."""
    from drsl.config import load_config
    from drsl.training import run_training

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.tiny and args.device == "auto":
        raise SystemExit("gpu_smoke: no CUDA device; use --tiny for the quick CPU check of the code path "
                         "(or --device cpu to run the full sizes on CPU, very slowly)")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="drsl_gpu_smoke_"))
    data, work = out / "data", out / "run"
    start = time.perf_counter()
    if not (data / "gta5").is_dir():
        write_data(data, args.tiny, args.images)
    data_seconds = time.perf_counter() - start
    from drsl.configs import resolve_config_path

    config = load_config(resolve_config_path(CONFIG), smoke_overrides(args, data, work))
    if not args.pretrained:
        config.init_checkpoint = str(calibrated_init(config, out / "calibrated_init.pt", device))
        config.optim.lr = args.random_lr
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    summary = run_training(config, device=device, overwrite=True)
    total = time.perf_counter() - start
    windows = seconds_per_iteration(work)
    # The first window of each round includes DataLoader start-up; the median is robust to it.
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "backbone": config.model.backbone,
        "amp": config.train.amp,
        "iterations": config.train.iterations,
        "rounds": config.adapt.rounds,
        "config": CONFIG,
        "init": args.pretrained or "random, BatchNorm statistics calibrated on generated source and target images",
        "lr": config.optim.lr,
        "global_batch": config.data.batch_size,
        "crop": config.data.source_augment.crop_size,
        "seconds_per_iteration_median": statistics.median(windows) if windows else None,
        "seconds_per_iteration_windows": windows,
        "run_seconds": total,
        "data_seconds": data_seconds,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "peak_gpu_reserved_gb": torch.cuda.max_memory_reserved() / 2**30 if device == "cuda" else None,
        "peak_host_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "miou19": summary.get("miou", {}).get("19"),
        "work_dir": str(work),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
    }
    (out / "smoke.json").write_text(json.dumps(result, indent=2))
    return result


def format_smoke(result: dict[str, Any]) -> str:
    """One paragraph for the console."""
    spi = result["seconds_per_iteration_median"]
    lines = [
        f"gpu smoke: {result['backbone']} DRSL ({CONFIG}, {result['rounds']} rounds), amp {result['amp']}, "
        f"{result['iterations']} iterations, global batch {result['global_batch']}+{result['global_batch']}, "
        f"crop {result['crop']}, on {result['device']}",
        f"  seconds/iteration (median of logged windows): {spi:.3f}" if spi is not None else "  no timing logged",
        f"  whole run (incl. pseudo-labels, evaluation): {result['run_seconds']:.1f} s; data written in {result['data_seconds']:.1f} s",
    ]
    if result["peak_gpu_memory_gb"] is not None:
        lines.append(
            f"  peak GPU memory: {result['peak_gpu_memory_gb']:.2f} GiB allocated, "
            f"{result['peak_gpu_reserved_gb']:.2f} GiB reserved"
        )
    lines.append(f"  peak host RSS: {result['peak_host_rss_gb']:.2f} GiB; results in {result['work_dir']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``drsl bench gpu-smoke``."""
    parser.add_argument("--tiny", action="store_true", help="light backbone, small images, CPU: checks the code path")
    parser.add_argument("--out", help="folder for data and run (default: a new temp folder)")
    parser.add_argument("--iterations", type=options.count, default=200, help="timed DRSL iterations")
    parser.add_argument("--images", type=options.count, default=4, help="images per generated split")
    parser.add_argument("--batch", type=options.count, help="global batch of source (and of target) images; default: the config's")
    parser.add_argument("--workers", type=options.non_negative_int, help="DataLoader workers per stream; default: the config's")
    parser.add_argument("--amp", default="bf16", choices=["none", "bf16", "fp16"], help="mixed precision")
    parser.add_argument("--backbone", default="resnet101", choices=["resnet101", "resnet101_deeplab", "resnet50"], help="encoder")
    parser.add_argument("--pretrained", help="ImageNet/DeepLab init weights file (optional)")
    parser.add_argument("--random-lr", type=options.positive, default=RANDOM_LR,
                        help="learning rate from random weights (without --pretrained); timing does not depend on it")
    add_device(parser)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="extra config overrides")


def run(args: argparse.Namespace) -> int:
    """Run the smoke test and print its summary."""
    if args.tiny and args.iterations == 200:
        args.iterations = 6
    print(format_smoke(run_smoke(args)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drsl.bench.gpu_smoke``."""
    return standalone_main("gpu_smoke", __doc__ or "", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
