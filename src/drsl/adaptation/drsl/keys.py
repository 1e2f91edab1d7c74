"""Counting per key (class, mode, cell...) without a host synchronisation."""

from __future__ import annotations

import torch
from torch import Tensor


def count_keys(keys: Tensor, num_keys: int, weights: Tensor | None = None) -> Tensor:
    """How often each key in ``0..num_keys-1`` occurs (int64), counting only where ``weights`` (bool).

    ``torch.bincount`` would do, but on CUDA it reads the input's maximum to the host first; a
    scatter-add into a fixed-size output stays on the device.
    """
    ones = torch.ones_like(keys) if weights is None else weights.to(keys.dtype)
    return torch.zeros(num_keys, dtype=keys.dtype, device=keys.device).scatter_add_(0, keys, ones)
