"""Optimisers and learning-rate schedules: SGD with poly decay (the DeepLab-v2 lineage) and AdamW
with DAFormer's schedule (linear warm-up times poly decay, 10x head learning rate, no weight decay
on the encoder's normalisation layers and on position terms).

The training module lists parameter groups with an ``lr_mult`` (``param_groups(optim_cfg)``);
this module turns them into an optimiser and a ``LambdaLR`` schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from drsl.config import OptimConfig

#: Parameter name parts that mark position terms (position embeddings, PVT/Twins position blocks).
_POSITION_PARTS = ("pos_embed", "pos_block", "position")


def no_decay_parameter_ids(module: nn.Module) -> set[int]:
    """Ids of the parameters exempt from weight decay: those of the normalisation layers of the
    encoder (``module.segmentor.encoder``) and the position terms anywhere in ``module``.

    This is DAFormer's ``paramwise_cfg`` under mmcv's key matching, where the longest key that the
    parameter's name contains wins (``pos_block`` before ``head`` before ``norm``): the decode
    head's normalisation layers are decayed, as every head's are here.
    """
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    encoder = module.segmentor.encoder  # type: ignore[union-attr]
    ids = {id(p) for m in encoder.modules() if isinstance(m, norms) for p in m.parameters(recurse=False)}
    for name, param in module.named_parameters():
        if any(part.startswith(_POSITION_PARTS) for part in name.split(".")):
            ids.add(id(param))
    return ids


def split_weight_decay(groups: list[dict[str, Any]], no_decay: set[int]) -> list[dict[str, Any]]:
    """Each group twice: its decayed parameters, then the others with ``weight_decay`` 0 (empty dropped)."""
    out = []
    for group in groups:
        params = list(group["params"])
        decay = [p for p in params if id(p) not in no_decay]
        exempt = [p for p in params if id(p) in no_decay]
        if decay:
            out.append({**group, "params": decay})
        if exempt:
            out.append({**group, "params": exempt, "weight_decay": 0.0})
    return out


def build_optimizer(module: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """The configured optimiser over ``module.param_groups(optim)``, each group's LR = lr * lr_mult."""
    groups = module.param_groups(optim)  # type: ignore[operator]
    if not optim.decay_norms:
        groups = split_weight_decay(groups, no_decay_parameter_ids(module))
    for group in groups:
        group["lr"] = optim.lr * group.pop("lr_mult", 1.0)
        group["initial_lr"] = group["lr"]
    if optim.name == "adamw":
        return torch.optim.AdamW(
            groups, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay
        )
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)


def poly_factor(iteration: int, total: int, power: float, warmup: int) -> float:
    """The ``poly`` schedule: a warm-up ramp (i + 1) / W, then (1 - i / T) ** power."""
    if warmup > 0 and iteration < warmup:
        return (iteration + 1) / warmup
    return max(0.0, 1.0 - iteration / max(total, 1)) ** power


def daformer_factor(iteration: int, total: int, power: float, warmup: int, ratio: float) -> float:
    """The ``daformer`` schedule (mmcv's poly with linear warm-up): (1 - i / T) ** power, times
    ``1 - (1 - i / W) * (1 - ratio)`` while i < W, so the warm-up starts at ``ratio``."""
    factor = max(0.0, 1.0 - iteration / max(total, 1)) ** power
    if warmup > 0 and iteration < warmup:
        factor *= 1.0 - (1.0 - iteration / warmup) * (1.0 - ratio)
    return factor


def lr_factor(optim: OptimConfig, total: int) -> Callable[[int], float]:
    """The multiplier of every group's initial LR at an iteration, for ``LambdaLR``."""
    if optim.schedule == "daformer":
        return lambda it: daformer_factor(it, total, optim.poly_power, optim.warmup_iters, optim.warmup_ratio)
    return lambda it: poly_factor(it, total, optim.poly_power, optim.warmup_iters)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with the configured schedule over ``total`` iterations."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(optim, total))
