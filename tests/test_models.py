"""The encoder / decode head contract of drsl.models and the Segmentor's input normalisation."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from drsl.config import ConfigError, ModelConfig
from drsl.models.deeplabv2 import ASPPHead
from drsl.models.interfaces import Encoder, InputNorm
from drsl.models.registry import build_encoder
from drsl.models.segmentor import Segmentor, build_segmentor


@pytest.mark.parametrize("name,output_stride", [("light", 8), ("resnet50", 16), ("efficientnet_lite0", 16)])
def test_encoders_declare_their_maps(name: str, output_stride: int) -> None:
    encoder = build_encoder(ModelConfig(backbone=name, output_stride=output_stride)).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        maps = encoder(torch.rand(1, 3, 64, 96))
    assert [m.shape[1] for m in maps] == encoder.out_channels
    assert [(64 // s, 96 // s) for s in encoder.strides] == [tuple(m.shape[-2:]) for m in maps]
    assert max(encoder.strides) == output_stride


def test_aspp_head_reads_and_exposes_the_deepest_map() -> None:
    segmentor = build_segmentor(ModelConfig(backbone="light", num_classes=5)).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        output = segmentor(images)
        deepest = segmentor.encoder(segmentor.normalize(images))[-1]
    assert torch.equal(output.features, deepest)
    assert output.logits.shape == (2, 5, 8, 8)
    assert segmentor.feature_channels == output.features.shape[1] == 256


@pytest.mark.parametrize("decoder,stride", [("aspp", 8), ("deeplabv3plus", 4)])
def test_decoders_fit_the_contract(decoder: str, stride: int) -> None:
    cfg = ModelConfig(backbone="light", decoder=decoder, num_classes=7, decoder_channels=32)  # type: ignore[arg-type]
    segmentor = build_segmentor(cfg).train()
    output = segmentor(torch.rand(2, 3, 64, 64))
    assert output.logits.shape == (2, 7, 64 // stride, 64 // stride)
    assert output.features.shape[:2] == (2, segmentor.feature_channels)
    output.logits.sum().backward()
    assert all(p.grad is not None for p in segmentor.head_parameters())


class _Probe(Encoder):
    """Records what it receives; Caffe-style convention."""

    input_norm = InputNorm(mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), bgr=True, scale=255.0)

    def __init__(self) -> None:
        super().__init__()
        self.out_channels, self.strides, self.seen = [3], [1], torch.empty(0)

    def forward(self, x: Tensor) -> list[Tensor]:
        self.seen = x
        return [x]


def test_segmentor_applies_the_encoders_normalisation() -> None:
    probe = _Probe()
    segmentor = Segmentor(probe, ASPPHead(3, 2))
    rgb = torch.rand(1, 3, 4, 4)
    segmentor(rgb)
    r, g, b = (rgb[0, i] * 255.0 for i in range(3))
    expected = torch.stack([b - 104.0, g - 117.0, r - 123.0])[None]
    torch.testing.assert_close(probe.seen, expected)


def test_unknown_backbone_is_a_config_error() -> None:
    cfg = ModelConfig(backbone="light", num_classes=19)
    cfg.backbone = "nope"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="model.backbone.*nope"):
        build_segmentor(cfg)
