"""Cross-domain ClassMix (Olsson et al. 2021, as used by DACS) and the strong photometric
augmentation of mixed images, on batches already on the training device.

Randomness comes from one generator per image, which the caller seeds from (seed, iteration, the
image's position in the global batch), so a resumed or multi-process run mixes exactly as an
uninterrupted single process would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2

from drsl.data.labels import IGNORE_INDEX


def step_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by a hash of integer keys (for example seed, iteration, rank)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(keys)).generate_state(1)[0]))


def class_mix_masks(labels: Tensor, num_classes: int, generators: Sequence[torch.Generator]) -> Tensor:
    """(B, H, W) bool: the pixels of half the classes (rounded up) each label map holds.

    The classes of image i are drawn at random: each class gets a uniform key from
    ``generators[i]`` (drawn for all ``num_classes`` whatever is present, so the draw does not
    depend on the data) and the present classes with the smallest keys are chosen. Ignored pixels
    are never in the mask. No host synchronisation.
    """
    batch = labels.shape[0]
    valid = (labels >= 0) & (labels < num_classes)
    index = torch.where(valid, labels, num_classes).reshape(batch, -1)
    present = torch.zeros(batch, num_classes + 1, dtype=torch.bool, device=labels.device)
    present.scatter_(1, index, True)
    present = present[:, :num_classes]
    keys = torch.stack([torch.rand(num_classes, generator=g) for g in generators])
    keys = keys.to(labels.device, non_blocking=True)
    keys = keys.masked_fill(~present, 2.0)  # absent classes sort last
    rank = keys.argsort(dim=1).argsort(dim=1)
    chosen = present & (rank < (present.sum(dim=1, keepdim=True) + 1) // 2)
    chosen = torch.cat([chosen, chosen.new_zeros(batch, 1)], dim=1)  # the ignore column: never
    return chosen.gather(1, index).view_as(labels)


def mix(mask: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """``source`` where ``mask`` (B, H, W), else ``target``; images (B, C, H, W) or maps (B, H, W)."""
    return torch.where(mask.unsqueeze(1) if source.dim() == 4 else mask, source, target)


class StrongAugment:
    """Per image, colour jitter with probability ``jitter_prob`` (brightness, contrast and
    saturation of ``strength``, hue of a quarter of it) and a Gaussian blur with probability
    ``blur_prob``, on float images in [0, 1] on any device (torchvision ops)."""

    def __init__(self, strength: float, jitter_prob: float, blur_prob: float) -> None:
        self.jitter = v2.ColorJitter(strength, strength, strength, strength / 4)
        self.blur = v2.GaussianBlur(5, sigma=(0.15, 1.15))
        self.jitter_prob, self.blur_prob = jitter_prob, blur_prob

    def __call__(self, images: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Augmented copies of ``images`` (B, 3, H, W); image i's draws come from ``generators[i]``."""
        out = []
        for image, generator in zip(images, generators, strict=True):
            draws = torch.rand(3, generator=generator)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(draws[2].item() * 2**31))  # the transforms draw from torch's RNG
                if draws[0] < self.jitter_prob:
                    image = self.jitter(image)
                if draws[1] < self.blur_prob:
                    image = self.blur(image)
            out.append(image.clamp(0, 1))
        return torch.stack(out)


def confidence_score(threshold: float) -> float:
    """The score -log(1 - p) of confidence ``threshold`` (the scale :func:`fuse` ranks pixels on)."""
    return -math.log1p(-threshold)


def confident_pixels(score: Tensor, predicted: Tensor, threshold: float) -> Tensor:
    """(B, H, W) bool: teacher confidence above ``threshold`` and not vetoed by a fusion rule."""
    return (score > confidence_score(threshold)) & (predicted != IGNORE_INDEX)


def confident_share(confident: Tensor) -> Tensor:
    """Per image (B,): the share of confident pixels, the weight of its pseudo-labelled pixels (DACS)."""
    return confident.flatten(1).float().mean(dim=1)
