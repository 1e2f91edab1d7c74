"""The segmentor: an encoder and a DeepLab-v2 head, exposing the encoder features."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from drsl.config import ModelConfig
from drsl.models.backbones import LightEncoder, ResNetEncoder
from drsl.models.deeplabv2 import ASPPClassifier
from drsl.models.weights import freeze_batchnorm, load_encoder_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentorOutput(NamedTuple):
    """Logits and the encoder features they came from (both at output stride 8)."""

    logits: Tensor
    features: Tensor


class Segmentor(nn.Module):
    """Normalisation, encoder and classifier. Inputs are float RGB images in [0, 1]."""

    def __init__(self, encoder: nn.Module, num_classes: int, aspp: str = "full") -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = ASPPClassifier(encoder.out_channels, num_classes, aspp)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_channels(self) -> int:
        """Channels of the encoder features, for heads attached to them."""
        return self.encoder.out_channels

    def forward(self, images: Tensor) -> SegmentorOutput:
        features = self.encoder((images - self.mean) / self.std)
        return SegmentorOutput(self.classifier(features), features)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the head learning rate."""
        return list(self.classifier.parameters())

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the base learning rate."""
        return list(self.encoder.parameters())


def build_encoder(cfg: ModelConfig) -> nn.Module:
    """The encoder named by the config."""
    if cfg.backbone == "light":
        return LightEncoder(cfg.light_width, cfg.light_depth)
    return ResNetEncoder(int(cfg.backbone.removeprefix("resnet")))


def build_segmentor(cfg: ModelConfig) -> Segmentor:
    """A segmentor with random initial weights (see models.weights for loading)."""
    return Segmentor(build_encoder(cfg), cfg.num_classes, cfg.aspp)


def build_model(cfg: ModelConfig) -> Segmentor:
    """A segmentor built from the config, with initial weights and BatchNorm options applied."""
    segmentor = build_segmentor(cfg)
    if cfg.pretrained:
        load_encoder_weights(segmentor.encoder, cfg.pretrained)
    if cfg.freeze_bn:
        freeze_batchnorm(segmentor.encoder)
    return segmentor
