"""``python -m drsl.bench.flops``: floating-point operations of drsl's training steps and inference
at the paper's sizes, counted by ``torch.utils.flop_counter`` without running the network.

The segmentor's forward and backward run on the ``meta`` device (shapes only, instantly, at any
size): a training image is one crop through forward and backward (frozen BatchNorm: no BatchNorm
parameter gradients; no gradient for the input images), an inference image one forward at the
evaluation input size. The DRSL regulariser (MMDL head and SMA on the feature grid) runs for real
on the CPU at the true grid size, its backward included. Only matrix products and convolutions
are counted (element-wise work, upsampling and the losses are not): the figures for the model of
docs/scaling.md.

    python -m drsl.bench.flops --json flops.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from drsl.bench.standalone import report_result, standalone_main


def _config(args: argparse.Namespace) -> Any:
    from drsl.config import load_config
    from drsl.configs import resolve_config_path
    from drsl.data.classes import bind_class_set

    config = load_config(resolve_config_path(args.config), [
        "init_checkpoint=null", "model.pretrained=null", f"model.backbone={args.backbone}",
    ])
    bind_class_set(config)
    return config


def segmentor_flops(config: Any, size: Sequence[int], train: bool) -> int:
    """FLOPs of one image of ``size`` through the segmentor: forward, and backward when ``train``."""
    from drsl.models.segmentor import build_model

    with torch.device("meta"):
        model = build_model(config.model).train(train)
        images = torch.empty(1, 3, *size)
    with FlopCounterMode(display=False) as counter:
        if train:
            model(images).logits.float().sum().backward()
        else:
            with torch.no_grad():
                model(images)
    return counter.get_total_flops()


def regulariser_flops(config: Any, crop: Sequence[int], batch: int) -> int:
    """FLOPs of the DRSL loss, forward and backward, for ``batch`` source + ``batch`` target crops."""
    from drsl.adaptation.drsl import DRSLRegularizer
    from drsl.models.segmentor import build_model

    with torch.device("meta"):
        model = build_model(config.model)
        features = model(torch.empty(1, 3, *crop)).features
    channels, h, w = features.shape[1:]
    torch.manual_seed(0)
    regulariser = DRSLRegularizer(channels, config.model.num_classes, config.adapt.drsl)
    feats = [torch.randn(batch, channels, h, w, requires_grad=True) for _ in range(2)]
    labels = [torch.randint(0, config.model.num_classes, (batch, *crop)) for _ in range(2)]
    with FlopCounterMode(display=False) as counter:
        loss, _ = regulariser(feats[0], labels[0], feats[1], labels[1])
        loss.backward()
    return counter.get_total_flops()


def count_flops(args: argparse.Namespace) -> dict[str, Any]:
    """The FLOPs of a training image, a DRSL step, an inference image (see the module docstring)."""
    config = _config(args)
    crop = config.data.source_augment.crop_size
    eval_size = config.eval.resize or crop
    batch = config.data.batch_size
    train_image = segmentor_flops(config, crop, train=True)
    regulariser = regulariser_flops(config, crop, batch)
    return {
        "config": args.config, "backbone": config.model.backbone, "crop": crop, "batch": batch,
        "eval_input": eval_size,
        "train_image_flops": train_image,
        "source_only_step_flops": batch * train_image,
        "cbst_step_flops": 2 * batch * train_image,
        "regulariser_flops": regulariser,
        "drsl_step_flops": 2 * batch * train_image + regulariser,
        "inference_image_flops": segmentor_flops(config, eval_size, train=False),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m drsl.bench.flops``."""
    parser.add_argument("--config", default="gta5_cityscapes/drsl", help="packaged config (crop, batch, eval size)")
    parser.add_argument("--backbone", default="resnet101_deeplab", help="encoder (model.backbone)")
    parser.add_argument("--json", help="write the results here")


def run(args: argparse.Namespace) -> int:
    """Count, print and optionally write the FLOPs."""
    result = count_flops(args)
    return report_result(result, json.dumps(result, indent=2), args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drsl.bench.flops``."""
    return standalone_main("flops", __doc__ or "", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
