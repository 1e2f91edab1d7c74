"""Seeding and deterministic mode."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def derived_seed(*keys: int) -> int:
    """A seed in [0, 2**31) drawn from integer keys (for example a sample's seed and a retry)."""
    return int(np.random.default_rng(list(keys)).integers(2**31))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic algorithms.

    On CPU every drsl run is deterministic for a given seed. On GPU, ``deterministic`` makes
    cuDNN pick deterministic kernels and makes torch raise on ops without one (some upsampling
    backward passes), at a speed cost; without it GPU results vary slightly from run to run.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
