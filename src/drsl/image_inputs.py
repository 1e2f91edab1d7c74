"""The image forms the Python API (:mod:`drsl.api`) takes, turned into (N, 3, H, W) tensor batches.

One image is a path (``str`` or ``Path``), a PIL image, an HxWx3 uint8 numpy array (RGB), or a
torch tensor 3xHxW; several images are a list or tuple of those, or an Nx3xHxW tensor. Tensors
are RGB, channels first: uint8 in 0..255, or floating point in [0, 1]. Anything else is an
:class:`~drsl.errors.ImageInputError` saying which form was expected.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby, islice
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from drsl.data.io import as_rgb, read_image
from drsl.errors import ImageInputError

#: One image in any form the API takes.
ImageLike = Union[str, Path, Image.Image, np.ndarray, Tensor]
#: One image, or several (a list or tuple of images, or an Nx3xHxW tensor).
Images = Union[ImageLike, Sequence[ImageLike]]

FORMS = "a path, a PIL image, an HxWx3 uint8 numpy array, a 3xHxW or Nx3xHxW tensor, or a list of these"


def is_several(images: Images) -> bool:
    """True for several images (a list, a tuple, an Nx3xHxW tensor): results come as a list."""
    return isinstance(images, (list, tuple)) or (isinstance(images, Tensor) and images.dim() == 4)


def _checked_tensor(image: Tensor, what: str) -> Tensor:
    """A (N, 3, H, W) view of a 3xHxW or Nx3xHxW uint8 or [0, 1] float tensor."""
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ImageInputError(
            f"{what}: a tensor must be RGB channels first, 3xHxW or Nx3xHxW; got shape {tuple(image.shape)}"
        )
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise ImageInputError(f"{what}: a tensor must be uint8 (0..255) or floating point in [0, 1]; got {image.dtype}")
    if image.is_floating_point() and image.numel() and (float(image.min()) < 0 or float(image.max()) > 1):
        raise ImageInputError(
            f"{what}: a floating-point tensor must hold values in [0, 1] (this one spans "
            f"{float(image.min()):g} to {float(image.max()):g}): divide by 255, or pass uint8"
        )
    return image if image.dim() == 4 else image.unsqueeze(0)


def as_batch(image: ImageLike, what: str = "the image") -> Tensor:
    """``image`` (or an Nx3xHxW tensor) as a (N, 3, H, W) uint8 or float tensor on its device;
    ``what`` names it in errors."""
    if isinstance(image, (str, Path)):
        image = read_image(image)
    elif isinstance(image, Image.Image):
        image = as_rgb(image.copy(), what)  # a copy: EXIF rotation must not change the caller's image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ImageInputError(
                f"{what}: a numpy image must be HxWx3 uint8 RGB; got shape {image.shape}, dtype {image.dtype}"
            )
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0)  # a copy: read-only arrays too
    if isinstance(image, Tensor):
        return _checked_tensor(image, what)
    raise ImageInputError(f"{what}: expected {FORMS}; got {type(image).__name__}")


def image_batches(images: Images, batch_size: int) -> Iterator[Tensor]:
    """The images as (N, 3, H, W) batches, in order: an Nx3xHxW tensor whole, a list's consecutive
    images of one size and dtype in batches of up to ``batch_size``."""
    if not isinstance(images, (list, tuple)):
        yield as_batch(images)
        return
    converted = (as_batch(image, f"image {index} of the list") for index, image in enumerate(images))
    for _, same_size in groupby(converted, key=lambda batch: (tuple(batch.shape[-2:]), batch.dtype)):
        while chunk := list(islice(same_size, batch_size)):
            yield torch.cat([batch.to(chunk[0].device) for batch in chunk])


def as_one(image: ImageLike) -> Tensor:
    """One image as a (1, 3, H, W) tensor, like :func:`as_batch`; a batch of several is an error."""
    batch = as_batch(image)
    if batch.shape[0] != 1:
        raise ImageInputError(f"expected one image; got a batch of {batch.shape[0]}")
    return batch


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """One image as an HxWx3 uint8 numpy array (float tensors scaled from [0, 1] to 0..255)."""
    batch = as_one(image)
    if batch.is_floating_point():
        batch = batch.mul(255).round().to(torch.uint8)
    return batch[0].permute(1, 2, 0).cpu().numpy()
