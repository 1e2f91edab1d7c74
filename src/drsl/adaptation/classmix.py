"""Cross-domain ClassMix (Olsson et al. 2021, as used by DACS) and the strong photometric
augmentation of mixed images, on batches already on the training device.

Randomness comes from one generator per image, which the caller seeds from (seed, iteration, the
image's position in the global batch), so a resumed or multi-process run mixes exactly as an
uninterrupted single process would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from drsl.data.labels import IGNORE_INDEX
from drsl.engine.distributed import all_reduce_sum


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


@dataclass(frozen=True)
class StrongParams:
    """One image's strong-augmentation draws: whether to jitter and blur, kornia 0.5's
    ``ColorJitter`` factors and step order (0 brightness, 1 contrast, 2 saturation, 3 hue), and
    the blur's sigma."""

    jitter: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float
    order: tuple[int, ...]
    blur: bool
    sigma: float


def blur_kernel_size(side: int) -> int:
    """DAFormer's Gaussian kernel size for an image side: ``ceil(0.1 * side)``, made odd by
    subtracting 1 when even (51 for 512 px, 13 for 128 px)."""
    size = math.ceil(0.1 * side)
    return size if size % 2 else max(size - 1, 1)


def color_jitter(image: Tensor, params: StrongParams) -> Tensor:
    """kornia 0.5's ``ColorJitter`` (kornia >= 0.6: ``ColorJiggle``) on one RGB image in [0, 1]:
    in ``params.order``, brightness adds ``brightness - 1``, contrast multiplies by ``contrast``
    (both clipped to [0, 1]), saturation multiplies the HSV saturation by ``saturation`` (capped at
    1) and hue turns the HSV hue by ``hue`` of a full turn."""
    steps = {
        0: lambda x: (x + (params.brightness - 1.0)).clamp(0, 1),
        1: lambda x: (x * params.contrast).clamp(0, 1),
        2: lambda x: scale_saturation(x, params.saturation),
        3: lambda x: TF.adjust_hue(x, params.hue),
    }
    for step in params.order:
        image = steps[step](image)
    return image


def scale_saturation(image: Tensor, factor: float) -> Tensor:
    """The HSV saturation of an RGB image (3, H, W) in [0, 1] times ``factor``, capped at 1, hue
    and value kept: each channel's distance below the brightest channel scales by ``factor``,
    at most until the darkest channel reaches 0."""
    value = image.amax(dim=0, keepdim=True)
    spread = value - image.amin(dim=0, keepdim=True)
    ratio = (value / spread.clamp_min(torch.finfo(image.dtype).tiny)).clamp(max=factor)
    return value - (value - image) * ratio


class StrongAugment:
    """DAFormer's strong augmentation of a mixed image (``dacs_transforms.strong_transform``):
    with probability ``jitter_prob`` kornia 0.5's colour jitter with brightness, contrast,
    saturation and hue all of ``strength`` (:func:`color_jitter`), then with probability
    ``blur_prob`` a Gaussian blur with sigma ~ U(0.15, 1.15) and a kernel of about a tenth of the
    image side (:func:`blur_kernel_size`). Float images in [0, 1] on any device.

    Each image decides and draws from its own generator; DAFormer decides once per batch and
    draws the factors per image (the same share of images is jittered and blurred)."""

    def __init__(self, strength: float, jitter_prob: float, blur_prob: float) -> None:
        self.strength, self.jitter_prob, self.blur_prob = strength, jitter_prob, blur_prob

    def draw(self, generator: torch.Generator) -> StrongParams:
        """One image's draws; the same number of draws whatever is decided."""
        u = torch.rand(7, generator=generator, dtype=torch.float64).tolist()
        order = tuple(torch.randperm(4, generator=generator).tolist())
        s = self.strength
        factor = lambda low, high, x: low + (high - low) * x  # noqa: E731
        hue = min(s, 0.5)
        return StrongParams(
            jitter=u[0] < self.jitter_prob,
            brightness=factor(max(0.0, 1.0 - s), min(2.0, 1.0 + s), u[2]),
            contrast=factor(max(0.0, 1.0 - s), 1.0 + s, u[3]),
            saturation=factor(max(0.0, 1.0 - s), 1.0 + s, u[4]),
            hue=factor(-hue, hue, u[5]),
            order=order,
            blur=u[1] < self.blur_prob,
            sigma=factor(0.15, 1.15, u[6]),
        )

    @staticmethod
    def apply(image: Tensor, params: StrongParams) -> Tensor:
        """``image`` (3, H, W) jittered and blurred as ``params`` says."""
        if params.jitter:
            image = color_jitter(image, params)
        if params.blur:
            size = [blur_kernel_size(image.shape[-1]), blur_kernel_size(image.shape[-2])]
            image = TF.gaussian_blur(image, size, [params.sigma, params.sigma])
        return image.clamp(0, 1)

    def __call__(self, images: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Augmented copies of ``images`` (B, 3, H, W); image i's draws come from ``generators[i]``."""
        return torch.stack([
            self.apply(image, self.draw(generator)) for image, generator in zip(images, generators, strict=True)
        ])


def threshold_score(threshold: float) -> float:
    """The score -log(1 - p) of confidence ``threshold`` (the scale :func:`fuse` ranks pixels on)."""
    return -math.log1p(-threshold)


def confident_pixels(score: Tensor, predicted: Tensor, threshold: float) -> Tensor:
    """(B, H, W) bool: teacher confidence at or above ``threshold`` (DAFormer's ``ge``) and not
    vetoed by a fusion rule."""
    return (score >= threshold_score(threshold)) & (predicted != IGNORE_INDEX)


def confident_share(confident: Tensor) -> Tensor:
    """0-d: the share of confident pixels in the whole batch, over every process (DAFormer's
    pseudo-label weight, one scalar per batch). One collective, no host synchronisation."""
    counts = torch.stack([confident.sum(), confident.new_tensor(confident.numel(), dtype=torch.long)])
    counts = all_reduce_sum(counts.float())
    return counts[0] / counts[1]


def pseudo_weights(share: Tensor, shape: torch.Size, ignore_top: float, ignore_bottom: float) -> Tensor:
    """(B, H, W) weights of the teacher-labelled pixels: ``share`` everywhere except the top
    ``ignore_top`` and bottom ``ignore_bottom`` shares of the rows (each rounded to the nearest
    row), which get 0 (DAFormer's ``pseudo_weight_ignore_top`` / ``_bottom``, there in rows)."""
    height = shape[-2]
    rows = torch.arange(height, device=share.device)
    kept = (rows >= round(ignore_top * height)) & (rows < height - round(ignore_bottom * height))
    return (share * kept).view(1, -1, 1).expand(shape[0], -1, shape[-1])
