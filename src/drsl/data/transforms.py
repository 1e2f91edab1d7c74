"""Joint image+mask transforms on tensors (torchvision.transforms.v2 with tv_tensors).

Images are uint8 3xHxW tensors, labels integer HxW tensors of train ids (255 = ignore). All
randomness comes from torch's global RNG, so seeding torch (and the DataLoader worker seeds) makes
augmentation reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from drsl.config import AugmentConfig
from drsl.data.labels import IGNORE_INDEX

PairTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

#: Gaussian blur kernel size and sigma range used when blur is drawn.
BLUR_KERNEL = 5
BLUR_SIGMA = (0.1, 2.0)


def resize_pair(image: Tensor, label: Tensor, size: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Resize a uint8 image (bilinear, antialiased) and its label (nearest) to [h, w].

    The label uses NEAREST_EXACT, which samples at pixel centres like the bilinear image resize,
    so the two stay aligned (plain NEAREST shifts labels by up to half a source pixel).
    """
    size = [int(size[0]), int(size[1])]
    if list(image.shape[-2:]) == size:
        return image, label
    image = F.resize_image(image, size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    return image, F.resize_mask(label, size, interpolation=v2.InterpolationMode.NEAREST_EXACT)


def pad_pair(image: Tensor, label: Tensor, size: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Pad bottom/right up to at least ``size`` = [h, w]: image with 0, label with IGNORE_INDEX."""
    pad_h = max(int(size[0]) - image.shape[-2], 0)
    pad_w = max(int(size[1]) - image.shape[-1], 0)
    if pad_h == 0 and pad_w == 0:
        return image, label
    padding = [0, 0, pad_w, pad_h]
    return F.pad_image(image, padding, fill=0), F.pad_mask(label, padding, fill=IGNORE_INDEX)


class TrainTransform:
    """Random scale, pad, random crop and flip on both tensors; photometric jitter on the image."""

    def __init__(self, cfg: AugmentConfig) -> None:
        if len(cfg.crop_size) != 2 or len(cfg.scale_range) != 2:
            raise ValueError("crop_size must be [h, w] and scale_range [low, high]")
        if not 0 < cfg.scale_range[0] <= cfg.scale_range[1]:
            raise ValueError(f"scale_range {cfg.scale_range} must satisfy 0 < low <= high")
        self.crop_size = [int(v) for v in cfg.crop_size]
        self.scale_range = (float(cfg.scale_range[0]), float(cfg.scale_range[1]))
        self.geometric = v2.Compose(
            [v2.RandomCrop(self.crop_size), v2.RandomHorizontalFlip(p=0.5 if cfg.hflip else 0.0)]
        )
        self.photometric = _photometric(cfg) if cfg.photometric else None

    def __call__(self, image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        """Transform a uint8 3xHxW image and an HxW train-id label (values <= 255)."""
        mask = label.to(torch.uint8)
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        size = [max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale))]
        image, mask = pad_pair(*resize_pair(image, mask, size), self.crop_size)
        image, mask = self.geometric(tv_tensors.Image(image), tv_tensors.Mask(mask))
        if self.photometric is not None:
            image = self.photometric(image)
        return image.as_subclass(Tensor), mask.as_subclass(Tensor).long()


def _photometric(cfg: AugmentConfig) -> v2.Compose:
    """Colour jitter, random Gaussian blur and additive Gaussian noise on uint8 images."""
    return v2.Compose(
        [
            v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue),
            v2.RandomApply([v2.GaussianBlur(BLUR_KERNEL, sigma=BLUR_SIGMA)], p=cfg.blur_prob),
            v2.GaussianNoise(sigma=cfg.noise_std, clip=True),
        ]
    )


def build_train_transform(cfg: AugmentConfig) -> PairTransform:
    """The joint training transform described by ``cfg`` (returns uint8 image, int64 label)."""
    return TrainTransform(cfg)
