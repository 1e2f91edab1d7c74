"""The convolution path: frozen BatchNorm in the autocast dtype, BatchNorm calibration, NHWC and
cuDNN autotuning defaults, and torch.compile of the segmentor."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from drsl.config import ConfigError, ModelConfig, TrainConfig, load_config
from drsl.configs import resolve_config_path
from drsl.engine.distributed import DistInfo
from drsl.engine.logging import RunLogger
from drsl.engine.trainer import Trainer, conv_settings
from drsl.models.batchnorm import (
    FrozenBatchNorm2d, calibrate_batchnorm, freeze_batchnorm, frozen_copy, sync_batchnorm,
)
from drsl.models.segmentor import build_model, build_segmentor
from drsl.training import build_module


def trained_batchnorm(channels: int = 8) -> nn.BatchNorm2d:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
        bn.running_mean.uniform_(-2.0, 2.0)
        bn.running_var.uniform_(0.1, 4.0)
    return bn.eval()


def test_frozen_batchnorm_keeps_bf16_and_matches_fp32_batchnorm() -> None:
    bn = trained_batchnorm()
    frozen = frozen_copy(bn)
    x = torch.randn(2, 8, 5, 7)
    reference = bn(x)
    assert torch.allclose(frozen(x), reference, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = frozen(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), reference, atol=0.05, rtol=0.02)
    nhwc = frozen(x.contiguous(memory_format=torch.channels_last))
    assert nhwc.is_contiguous(memory_format=torch.channels_last)


def test_torchvision_frozen_batchnorm_promotes_to_fp32() -> None:
    # The reason for our own module: torchvision's fp32 buffers turn bf16 activations into fp32.
    from torchvision.ops import FrozenBatchNorm2d as TorchvisionFrozen

    tv = TorchvisionFrozen(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert tv(torch.randn(1, 8, 2, 2).bfloat16()).dtype == torch.float32


def test_frozen_encoder_stays_bf16_under_autocast() -> None:
    model = build_model(ModelConfig(num_classes=19, backbone="light", light_width=1, freeze_bn=True))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    dtypes: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, (FrozenBatchNorm2d, nn.ReLU)):
            module.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(1, 3, 32, 32))
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert out.features.dtype == torch.bfloat16


def test_frozen_efficientnet_computes_what_eval_mode_computes() -> None:
    # timm's BatchNormAct2d carries EfficientNet's ReLU6: freezing must keep it.
    torch.manual_seed(0)
    model = build_segmentor(ModelConfig(backbone="efficientnet_lite0", output_stride=16, num_classes=5)).eval()
    frozen = copy.deepcopy(model)
    freeze_batchnorm(frozen.encoder)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(frozen(images).logits, model(images).logits, atol=1e-5)


def test_synchronised_efficientnet_keeps_its_activations() -> None:
    # torch's converter turns timm's BatchNormAct2d into a SyncBatchNorm that skips its ReLU6.
    torch.manual_seed(0)
    encoder = build_segmentor(ModelConfig(backbone="efficientnet_lite0", output_stride=16, num_classes=5)).encoder
    reference = copy.deepcopy(encoder).eval()
    synced = sync_batchnorm(encoder).eval()  # eval mode: SyncBatchNorm runs without a process group
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(synced(images), reference(images)))


def test_loads_batchnorm_state_with_num_batches_tracked() -> None:
    bn = trained_batchnorm()
    frozen = FrozenBatchNorm2d(8)
    frozen.load_state_dict(bn.state_dict())  # has num_batches_tracked: dropped, not an error
    assert torch.equal(frozen.running_var, bn.running_var)
    assert set(frozen.state_dict()) == {"weight", "bias", "running_mean", "running_var"}


def test_calibration_sets_the_data_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    batches = [torch.rand(2, 3, 9, 9) * 5 + 3 for _ in range(3)]
    calibrate_batchnorm(model, batches)
    conv = torch.cat([model[0](b) for b in batches]).detach()
    assert torch.allclose(model[1].running_mean, conv.mean((0, 2, 3)), atol=1e-4)
    # update_bn averages the per-batch (unbiased) variances: equal batch sizes, so compare to that
    per_batch = torch.stack([model[0](b).detach().var((0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(model[1].running_var, per_batch, rtol=1e-4)
    assert model[1].momentum == 0.1 and model.training


def test_calibrated_frozen_resnet_stays_normalised() -> None:
    # Random ResNet weights with default statistics (mean 0, var 1) blow up once frozen; calibrated
    # statistics keep the features of the order of one (the gpu-smoke starting point).
    torch.manual_seed(0)
    images = [torch.rand(1, 3, 32, 32) for _ in range(2)]
    calibrated = build_segmentor(ModelConfig(num_classes=19, backbone="resnet101"))
    raw = freeze_batchnorm(copy.deepcopy(calibrated)).eval()
    calibrate_batchnorm(calibrated, images)
    calibrated = freeze_batchnorm(calibrated).eval()
    with torch.no_grad():
        raw_std = float(raw(images[0]).features.std())
        calibrated_std = float(calibrated(images[0]).features.std())
    assert raw_std > 100 and calibrated_std < 10, (raw_std, calibrated_std)


def test_conv_settings_defaults() -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert conv_settings(TrainConfig(), cuda) == (True, True)
    assert conv_settings(TrainConfig(), cpu) == (False, False)
    assert conv_settings(TrainConfig(deterministic=True), cuda) == (True, False)
    assert conv_settings(TrainConfig(channels_last=False, cudnn_benchmark=False), cuda) == (False, False)
    assert conv_settings(TrainConfig(channels_last=True), cpu) == (True, False)
    with pytest.raises(ConfigError, match="cudnn_benchmark"):
        conv_settings(TrainConfig(cudnn_benchmark=True, deterministic=True), cuda)


def test_channels_last_auto_is_a_valid_config_value(tmp_path: Path) -> None:
    config = load_config(resolve_config_path("synth/source_only"), ["train.channels_last=auto"])
    assert config.train.channels_last == "auto"
    with pytest.raises(ConfigError, match="channels_last"):
        load_config(resolve_config_path("synth/source_only"), ["train.channels_last=sometimes"])


def step_losses(config_overrides: list[str], tmp_path: Path) -> list[float]:
    from test_amp import make_batch

    config = load_config(resolve_config_path("synth/drsl"), [
        "init_checkpoint=null", f"work_dir={tmp_path}", "model.light_width=1", "model.freeze_bn=true",
        "optim.warmup_iters=0", *config_overrides,
    ])
    torch.manual_seed(0)
    trainer = Trainer(config, build_module(config), DistInfo(), RunLogger(tmp_path, enabled=False))
    return [float(trainer.step(make_batch(step))["loss"]) for step in range(2)]


def test_compile_option_compiles_the_segmentor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The eager backend traces with dynamo but skips code generation: the wiring, in seconds.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    plain = step_losses([], tmp_path / "plain")
    compiled = step_losses(["train.compile=true"], tmp_path / "compiled")
    assert compiled == pytest.approx(plain, rel=1e-5)


@pytest.mark.slow
def test_compile_with_inductor(tmp_path: Path) -> None:
    # Real code generation on CPU: about a minute of compilation.
    plain = step_losses([], tmp_path / "plain")
    compiled = step_losses(["train.compile=true"], tmp_path / "compiled")
    assert compiled == pytest.approx(plain, rel=1e-4)
