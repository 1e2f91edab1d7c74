"""Optimisers and schedules: AdamW's parameter groups (head LR, no decay on norms and position
terms), its first update, and the DAFormer schedule's LR at a few iterations against a hand
computation; the SGD poly schedule is unchanged."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from drsl.config import Config, OptimConfig, load_config
from drsl.configs import resolve_config_path
from drsl.engine.optim import build_optimizer, build_scheduler
from drsl.training import build_module

#: DAFormer's optimiser (configs/_base_/schedules/adamw.py, poly10warm.py).
DAFORMER = dict(name="adamw", lr=6e-5, betas=[0.9, 0.999], weight_decay=0.01, decay_norms=False,
                schedule="daformer", poly_power=1.0, warmup_iters=1500, warmup_ratio=1e-6, head_lr_mult=10.0)


class ToyEncoder(nn.Module):
    """An encoder with a position embedding, a linear layer and a LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, 4))
        self.linear = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)


class Toy(nn.Module):
    """A segmentor whose encoder is :class:`ToyEncoder`, and a 'head' with a BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.segmentor = nn.Module()
        self.segmentor.encoder = ToyEncoder()
        self.head = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))

    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        encoder = list(self.segmentor.encoder.parameters())
        return [{"params": encoder, "lr_mult": 1.0}, {"params": list(self.head.parameters()), "lr_mult": optim.head_lr_mult}]


def groups_by_name(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, tuple[float, float]]:
    names = {id(p): n for n, p in module.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


def test_adamw_groups_exempt_encoder_norms_and_position_terms_and_scale_the_head() -> None:
    toy = Toy()
    optimizer = build_optimizer(toy, OptimConfig(**DAFORMER))
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.999)
    groups = groups_by_name(toy, optimizer)
    encoder = "segmentor.encoder."
    assert {name: lr for name, (lr, _) in groups.items()} == pytest.approx({
        f"{encoder}pos_embed": 6e-5, f"{encoder}linear.weight": 6e-5, f"{encoder}linear.bias": 6e-5,
        f"{encoder}norm.weight": 6e-5, f"{encoder}norm.bias": 6e-5, "head.0.weight": 6e-4,
        "head.0.bias": 6e-4, "head.1.weight": 6e-4, "head.1.bias": 6e-4,
    })
    assert {name for name, (_, wd) in groups.items() if wd == 0.01} == {
        f"{encoder}linear.weight", f"{encoder}linear.bias", "head.0.weight", "head.0.bias", "head.1.weight",
        "head.1.bias",
    }
    assert all(wd in (0.0, 0.01) for _, wd in groups.values())


def test_adamw_first_step_decays_only_the_decayed_groups() -> None:
    toy = Toy()
    optimizer = build_optimizer(toy, OptimConfig(**DAFORMER))
    before = {n: p.detach().clone() for n, p in toy.named_parameters()}
    grads = {n: torch.randn_like(p) for n, p in toy.named_parameters()}
    for n, p in toy.named_parameters():
        p.grad = grads[n].clone()
    optimizer.step()
    for name, param in toy.named_parameters():
        lr, wd = groups_by_name(toy, optimizer)[name]
        g = grads[name]  # Adam's first step: bias-corrected m / sqrt(v) = g / |g|
        expected = before[name] * (1 - lr * wd) - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(param.detach(), expected, rtol=1e-5, atol=1e-9)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_daformer_schedule_matches_mmcv_poly_with_linear_warmup() -> None:
    toy = Toy()
    cfg = OptimConfig(**DAFORMER)
    optimizer = build_optimizer(toy, cfg)
    scheduler = build_scheduler(optimizer, cfg, total=40000)
    seen = {}
    for it in range(20001):
        if it in (0, 750, 1499, 1500, 20000):
            seen[it] = optimizer.param_groups[0]["lr"], optimizer.param_groups[-1]["lr"]
        scheduler.step()
    # mmcv: poly lr = base * (1 - i/T)^1; warm-up multiplies by 1 - (1 - i/W) * (1 - ratio).
    hand = {
        0: 6e-5 * 1.0 * (1 - 1.0 * (1 - 1e-6)),
        750: 6e-5 * (1 - 750 / 40000) * (1 - 0.5 * (1 - 1e-6)),
        1499: 6e-5 * (1 - 1499 / 40000) * (1 - (1 / 1500) * (1 - 1e-6)),
        1500: 6e-5 * (1 - 1500 / 40000),
        20000: 6e-5 * 0.5,
    }
    for it, lr in hand.items():
        assert seen[it][0] == pytest.approx(lr, rel=1e-9)
        assert seen[it][1] == pytest.approx(10 * lr, rel=1e-9)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_sgd_poly_schedule_is_unchanged() -> None:
    toy = Toy()
    cfg = OptimConfig(lr=0.01, warmup_iters=4, poly_power=0.9, head_lr_mult=1.0)
    optimizer = build_optimizer(toy, cfg)
    assert isinstance(optimizer, torch.optim.SGD) and len(optimizer.param_groups) == 2
    assert all(g["weight_decay"] == 5e-4 for g in optimizer.param_groups)
    scheduler = build_scheduler(optimizer, cfg, total=100)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert lrs == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01 * 0.96**0.9, 0.01 * 0.95**0.9])


def test_daformer_config_exempts_every_encoder_layernorm_of_a_mit_segmentor() -> None:
    config: Config = load_config(
        resolve_config_path("gta5_cityscapes/daformer_source_only"), ["model.backbone=mit_b0", "model.pretrained=null"]
    )
    module = build_module(config)
    optimizer = build_optimizer(module, config.optim)
    decays = groups_by_name(module, optimizer)
    for name, module_part in module.named_modules():
        for pname, _ in module_part.named_parameters(recurse=False):
            full = f"{name}.{pname}"
            head = full.startswith("segmentor.decoder.")
            if isinstance(module_part, (nn.LayerNorm, nn.BatchNorm2d)):
                assert decays[full][1] == (0.01 if head else 0.0), full
            elif isinstance(module_part, (nn.Linear, nn.Conv2d)):
                assert decays[full][1] == 0.01, full
            assert decays[full][0] == pytest.approx(6e-4 if head else 6e-5), full
