"""The encoder / decode head contract of drsl.models and the Segmentor's input normalisation."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from drsl.config import ConfigError, ModelConfig
from drsl.models.deeplabv2 import ASPPHead
from drsl.models.interfaces import Encoder, InputNorm
from drsl.models.registry import build_encoder
from drsl.models.segmentor import Segmentor, build_model, build_segmentor


@pytest.mark.parametrize("name,output_stride", [("light", 8), ("resnet50", 16), ("efficientnet_lite0", 16)])
def test_encoders_declare_their_maps(name: str, output_stride: int) -> None:
    encoder = build_encoder(ModelConfig(backbone=name, output_stride=output_stride)).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        maps = encoder(torch.rand(1, 3, 64, 96))
    assert [m.shape[1] for m in maps] == encoder.out_channels
    assert [(64 // s, 96 // s) for s in encoder.strides] == [tuple(m.shape[-2:]) for m in maps]
    assert max(encoder.strides) == output_stride


@pytest.mark.parametrize("name", ["light", "resnet50", "efficientnet_lite0", "mit_b0"])
def test_stage_modules_compute_each_map(name: str) -> None:
    # The stages hold every encoder parameter once, and map k depends on stages 0..k only.
    encoder = build_encoder(ModelConfig(backbone=name, output_stride=8 if name == "light" else 32)).train()
    stages = [{id(p) for module in stage for p in module.parameters()} for stage in encoder.stage_modules()]
    parameters = list(encoder.parameters())
    assert len(stages) == len(encoder.out_channels)
    assert sum(map(len, stages)) == len(set().union(*stages)) == len(parameters)
    maps = encoder(torch.rand(2, 3, 64, 64))
    for k, feature_map in enumerate(maps):
        grads = torch.autograd.grad(feature_map.sum(), parameters, allow_unused=True, retain_graph=True)
        reached = {id(p) for p, g in zip(parameters, grads) if g is not None}
        assert reached == set().union(*stages[: k + 1]), k


def test_frozen_stages_keep_their_weights_and_statistics() -> None:
    cfg = ModelConfig(backbone="efficientnet_lite0", output_stride=16, decoder="deeplabv3plus",
                      num_classes=5, pretrained="bundled", frozen_stages=2)
    model = build_model(cfg).train()
    stages = model.encoder.stage_modules()
    before = [[{k: v.clone() for k, v in m.state_dict().items()} for m in stage] for stage in stages]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    logits = model(torch.rand(2, 3, 64, 64)).logits
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 5, (2, *logits.shape[-2:]))).backward()
    optimizer.step()
    changed = [any(not torch.equal(v, m.state_dict()[k]) for m, state in zip(stage, saved) for k, v in state.items())
               for stage, saved in zip(stages, before)]
    assert changed == [False, False, True, True]
    batchnorms = [any(isinstance(sub, torch.nn.BatchNorm2d) for m in stage for sub in m.modules()) for stage in stages]
    assert batchnorms == [False, False, True, True]


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
