"""Sizes checked before any work: a network or image that cannot fit in this machine's memory,
training crops below the network's resolution, and single-image batches through BatchNorm
layers that learn their statistics. Each is a ConfigError naming the keys, raised before a
tensor is allocated or a file written.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn

from drsl.config import Config, ConfigError, ModelConfig

#: Bytes per float32 value.
FLOAT_BYTES = 4
#: Copies of every weight while training: the weights, their gradients and up to two optimizer
#: moments (AdamW).
TRAINING_COPIES = 4


def machine_memory(device: torch.device | None = None) -> int:
    """Bytes of memory of ``device``: a CUDA GPU's, else the machine's physical memory."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


#: Value counts of the networks measured so far, by the repr of their config.
_VALUE_COUNTS: dict[str, int] = {}


def value_count(model: ModelConfig) -> int:
    """Parameters and buffers of the segmentor ``model`` describes, counted on the meta device:
    nothing is allocated and no weights file is read."""
    from drsl.models.segmentor import build_segmentor

    key = repr(model)
    if key not in _VALUE_COUNTS:
        with torch.device("meta"):
            segmentor = build_segmentor(model)
        _VALUE_COUNTS[key] = sum(t.numel() for t in (*segmentor.parameters(), *segmentor.buffers()))
    return _VALUE_COUNTS[key]


def gigabytes(size: float) -> str:
    """A byte count in GB, e.g. '3.2 GB'."""
    return f"{size / 1e9:.3g} GB"


def check_model_memory(model: ModelConfig, copies: int = 1, device: torch.device | None = None) -> None:
    """A ConfigError when ``copies`` float32 copies of the network's weights exceed the memory of
    ``device`` (default: the machine's, where the network is built first)."""
    cfg = dataclasses.replace(model, pretrained=None, frozen_stages=0, num_classes=model.num_classes or 1)
    values = value_count(cfg)
    needed = values * FLOAT_BYTES * copies
    available = machine_memory(device)
    if needed > available:
        widths = ", ".join(
            f"model.{key}={getattr(model, key)}" for key in ("light_width", "light_depth", "decoder_channels")
        )
        raise ConfigError(
            f"the network of model.backbone={model.backbone} ({widths}) has {values:.3g} weights: "
            f"{gigabytes(needed)} {'to train' if copies > 1 else 'to hold'}, more than the "
            f"{gigabytes(available)} of memory here"
        )


def _image_sizes(config: Config) -> dict[str, tuple[list[int], int]]:
    """Config keys of image sizes -> (size, how many such images one step holds)."""
    sizes = {
        "data.source_augment.crop_size": (config.data.source_augment.crop_size, config.data.batch_size),
        "data.target_augment.crop_size": (config.data.target_augment.crop_size, config.data.batch_size),
        "eval.crop_size": (config.eval.crop_size, config.eval.batch_size),
    }
    for key, size in (("eval.resize", config.eval.resize),
                      *((f"data.{name}.resize", getattr(getattr(config.data, name), "resize", None))
                        for name in ("source", "target", "val") if getattr(config.data, name) is not None)):
        if size is not None:
            sizes[key] = (size, config.eval.batch_size if key == "eval.resize" else config.data.batch_size)
    return sizes


def check_image_memory(config: Config, device: torch.device | None = None) -> None:
    """A ConfigError when the float32 RGB images of one batch at a configured size (crop or
    resize) exceed the memory of ``device``."""
    available = machine_memory(device)
    for key, (size, count) in _image_sizes(config).items():
        needed = size[0] * size[1] * 3 * FLOAT_BYTES * count
        if needed > available:
            raise ConfigError(
                f"{key}={size}: {count} such image(s) take {gigabytes(needed)} as float32 RGB, more than the "
                f"{gigabytes(available)} of memory here"
            )


def check_training_shapes(config: Config, parts: list[nn.Module], micro_batch: int) -> None:
    """Crops must be at least the network's output stride (else its deepest map is empty), and
    a micro-batch of one image cannot train BatchNorm statistics (a 1x1 map, as after image
    pooling, has one value per channel). ``parts`` are the trained modules, the segmentor first."""
    stride = max(parts[0].encoder.strides)  # type: ignore[union-attr]
    crops = ["source_augment"] + (["target_augment"] if config.adapt.method != "source_only" else [])
    for name in crops:
        crop = getattr(config.data, name).crop_size
        if min(crop) < stride:
            raise ConfigError(
                f"data.{name}.crop_size={crop} is smaller than the output stride {stride} of "
                f"model.backbone={config.model.backbone}: use crops of at least {stride} pixels per side"
            )
    learning = [m for part in parts for m in part.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if micro_batch < 2 and learning:
        raise ConfigError(
            f"data.batch_size={config.data.batch_size} puts {micro_batch} image in each forward pass "
            f"(train.grad_accum={config.train.grad_accum}, over every process), but the network has "
            f"{len(learning)} BatchNorm layers that learn their statistics, which need at least 2: raise "
            "data.batch_size, or set model.freeze_bn=true where only the encoder has BatchNorm"
        )
