"""DRSLRegularizer as the training hosts call it: loss, gradients, ramps, edge cases, labels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from drsl.adaptation.drsl import DRSLRegularizer, downsample_labels
from drsl.config import DRSLConfig
from test_mmdl import KAPPA, LABELS, MEANS, Z, hand_assign, hand_nll

SMALL = {"hidden_dim": 8, "embed_dim": 4}


def _batch(b: int = 2, channels: int = 6, size: int = 9, scale: int = 8, classes: int = 3):
    """Features (B, F, size, size) with grad, labels at image resolution (size * scale)."""
    gen = torch.Generator().manual_seed(b)
    feats = torch.randn(b, channels, size, size, generator=gen).requires_grad_()
    coarse = torch.randint(0, classes, (b, size, size), generator=gen)
    labels = coarse.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return feats, labels


def test_loss_matches_hand_computation_end_to_end() -> None:
    cfg = DRSLConfig(embed_dim=2, num_modes=2, kappa=KAPPA, sinkhorn_iters=0,
                     sinkhorn_epsilon=0.5, lambda_mm=0.3)
    reg = DRSLRegularizer(2, 2, cfg)
    reg.head.net = nn.Identity()  # embeddings = the (unit) input features
    with torch.no_grad():
        reg.head.mu.copy_(torch.tensor(MEANS))
    feats = torch.tensor(Z).T.reshape(1, 2, 1, 3)
    labels = torch.tensor(LABELS).view(1, 1, 3).repeat_interleave(8, 1).repeat_interleave(8, 2)
    loss, logs = reg(feats, labels)
    assert loss.item() == pytest.approx(0.3 * (hand_nll() + hand_assign(0.5)), rel=1e-5)
    assert logs["sma"] == 0.0 and logs["labelled_pixels"] == 3


@pytest.mark.parametrize("space", ["embedding", "encoder"])
def test_gradients_reach_encoder_features_head_and_means(space: str) -> None:
    reg = DRSLRegularizer(6, 3, DRSLConfig(sma_space=space, **SMALL))
    src, src_y = _batch()
    tgt, tgt_y = _batch()
    loss, logs = reg(src, src_y, tgt, tgt_y)
    loss.backward()
    assert logs["sma_pairs"] > 0 and logs["sma"] > 0
    for tensor in (src, tgt, reg.head.mu, *reg.head.net.parameters()):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("detach", "space"), [(True, "embedding"), (False, "embedding"), (True, "encoder")]
)
def test_detach_source_means_no_sma_gradient_to_source(detach: bool, space: str) -> None:
    cfg = DRSLConfig(lambda_mm=0.0, detach_source=detach, sma_space=space, **SMALL)
    reg = DRSLRegularizer(6, 3, cfg)
    src, src_y = _batch()
    tgt, tgt_y = _batch()
    reg(src, src_y, tgt, tgt_y)[0].backward()
    assert tgt.grad.abs().sum() > 0
    assert (src.grad.abs().sum() == 0) == detach


def test_warmup_ramps_both_weights_linearly() -> None:
    reg = DRSLRegularizer(6, 3, DRSLConfig(warmup_iters=100, **SMALL)).eval()
    src, src_y = _batch()
    tgt, tgt_y = _batch()
    full, _ = reg(src, src_y, tgt, tgt_y, step=None)
    for step, factor in ((0, 0.0), (25, 0.25), (100, 1.0), (500, 1.0)):
        reg.set_rng_state(torch.Generator().manual_seed(0).get_state())
        loss, logs = reg(src, src_y, tgt, tgt_y, step=step)
        reg.set_rng_state(torch.Generator().manual_seed(0).get_state())
        unramped, _ = reg(src, src_y, tgt, tgt_y)
        assert logs["ramp"] == factor
        assert loss.item() == pytest.approx(factor * unramped.item(), abs=1e-6)
    assert full.item() > 0


def test_sma_off_gives_mmdl_only() -> None:
    reg = DRSLRegularizer(6, 3, DRSLConfig(sma=False, lambda_mm=1.0, **SMALL))
    src, src_y = _batch()
    tgt, tgt_y = _batch()
    loss, logs = reg(src, src_y, tgt, tgt_y)
    assert logs["sma"] == 0.0 and logs["sma_pairs"] == 0
    assert loss.item() == pytest.approx(float(logs["mmdl"]), rel=1e-6)


@pytest.mark.parametrize(
    "case", ["no_target", "target_all_ignored", "all_ignored", "one_pixel_class"]
)
def test_absent_labels_never_crash(case: str) -> None:
    reg = DRSLRegularizer(6, 3, DRSLConfig(**SMALL))
    src, src_y = _batch()
    tgt, tgt_y = _batch()
    if case == "no_target":
        tgt = tgt_y = None
    if case in ("target_all_ignored", "all_ignored"):
        tgt_y = torch.full_like(tgt_y, 255)
    if case == "all_ignored":
        src_y = torch.full_like(src_y, 255)
    if case == "one_pixel_class":
        src_y[:] = 255
        src_y[0, :8, :8] = 1
    loss, logs = reg(src, src_y, tgt, tgt_y, step=3)
    loss.backward()
    assert torch.isfinite(loss) and logs["sma"] == 0.0
    assert all(isinstance(v, float) or v.dim() == 0 for v in logs.values())  # 0-d, left on the device
    assert (loss.item() == 0.0) == (case == "all_ignored")
    # Every parameter is in the graph whatever the labels: DDP needs a gradient from every process.
    assert all(p.grad is not None for p in reg.parameters())


@pytest.mark.parametrize("batch", [1, 16])
def test_full_size_batches(batch: int) -> None:
    cfg = DRSLConfig(num_modes=5, grid_stride=2, **SMALL)
    reg = DRSLRegularizer(16, 19, cfg)
    src, src_y = _batch(batch, 16, 65, 8, 19)
    tgt, tgt_y = _batch(batch, 16, 65, 8, 19)
    tgt_y[:, ::2] = 255
    loss, logs = reg(src, src_y, tgt, tgt_y, step=10)
    loss.backward()
    assert torch.isfinite(loss) and logs["sma_pairs"] > 0
    assert reg.usage.shape == (19, 5)
    assert reg.class_posterior(src).shape == (batch, 19, 65, 65)


def test_mode_map_marks_ignored_pixels() -> None:
    reg = DRSLRegularizer(6, 3, DRSLConfig(**SMALL)).eval()
    feats, _ = _batch()
    labels = torch.randint(0, 3, (2, 9, 9))
    labels[:, 0] = 255
    modes = reg.mode_map(feats, labels)
    assert modes.dtype == torch.int64 and modes.shape == (2, 9, 9)
    assert (modes[:, 0] == 255).all() and (modes[:, 1:] < 3).all()


def test_downsample_labels_takes_the_majority_of_each_cell() -> None:
    labels = torch.tensor(
        [
            [0, 0, 1, 255],
            [0, 1, 255, 255],
            [2, 2, 7, 7],
            [1, 2, 7, 1],
        ]
    )[None]
    out = downsample_labels(labels, (2, 2), num_classes=3)  # 7 is out of range: ignore
    assert out.tolist() == [[[0, 255], [2, 255]]]
    assert torch.equal(downsample_labels(labels, (4, 4), 3)[0, 2], torch.tensor([2, 2, 255, 255]))
    uneven = downsample_labels(torch.arange(5)[None, None].expand(1, 5, 5) % 2, (2, 2), 2)
    assert uneven.tolist() == [[[0, 0], [0, 0]]]  # cells of 3 and 2 columns: ties to lowest id


@pytest.mark.parametrize(
    "options",
    [
        {"num_modes": 1},
        {"sma_distance": "pairwise", "grid_stride": 4},
        {"sma_margin": 0.2, "mean_update": "ema"},
        {"sma_margin": 0.2, "sma_space": "encoder", "detach_source": False},
    ],
)
def test_config_variants_train(options: dict) -> None:
    reg = DRSLRegularizer(6, 3, DRSLConfig(**{**SMALL, **options}))
    src, src_y = _batch(size=17)
    tgt, tgt_y = _batch(size=17)
    loss, logs = reg(src, src_y, tgt, tgt_y)
    loss.backward()
    assert torch.isfinite(loss) and logs["sma_pairs"] > 0 and tgt.grad.abs().sum() > 0
    assert torch.allclose(reg.usage.sum(1), torch.ones(3))
