"""The segmentor: input normalisation (the encoder's), encoder and decode head."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from drsl.config import ModelConfig
from drsl.models.interfaces import DecodeHead, Encoder
from drsl.models.batchnorm import freeze_batchnorm, freeze_stages
from drsl.models.registry import backbone, build_decoder, build_encoder, pretrained_path
from drsl.models.weights import load_encoder_weights


class SegmentorOutput(NamedTuple):
    """Logits and the decode head's fused features, which the DRSL MMDL head reads."""

    logits: Tensor
    features: Tensor


class Segmentor(nn.Module):
    """Inputs are float RGB images in [0, 1]; the encoder's ``input_norm`` is applied here."""

    def __init__(self, encoder: Encoder, decoder: DecodeHead) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        norm = encoder.input_norm
        self.bgr, self.scale = norm.bgr, norm.scale
        self.register_buffer("mean", torch.tensor(norm.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(norm.std).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_channels(self) -> int:
        """Channels of ``SegmentorOutput.features``, for heads attached to them."""
        return self.decoder.feature_channels

    def normalize(self, images: Tensor) -> Tensor:
        """RGB [0, 1] images -> the encoder's channel order, value scale and statistics."""
        if self.bgr:
            images = images.flip(1)
        if self.scale != 1.0:
            images = images * self.scale
        return (images - self.mean) / self.std

    def encode(self, images: Tensor) -> list[Tensor]:
        """The encoder's feature maps (shallow to deep) of RGB [0, 1] images."""
        return self.encoder(self.normalize(images))

    def forward(self, images: Tensor) -> SegmentorOutput:
        logits, features = self.decoder(self.encode(images))
        return SegmentorOutput(logits, features)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the head learning rate (the decode head)."""
        return list(self.decoder.parameters())

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the base learning rate."""
        return list(self.encoder.parameters())


def build_segmentor(cfg: ModelConfig) -> Segmentor:
    """A segmentor with random initial weights (see :func:`build_model` for loading)."""
    if cfg.num_classes is None:
        raise ValueError("model.num_classes is unset: bind the config to its class set first "
                         "(drsl.data.classes.bind_class_set)")
    encoder = build_encoder(cfg)
    return Segmentor(encoder, build_decoder(encoder, cfg))


def build_model(cfg: ModelConfig) -> Segmentor:
    """A segmentor built from the config, with initial weights and BatchNorm options applied."""
    segmentor = build_segmentor(cfg)
    weights = pretrained_path(cfg)
    if weights is not None:
        load_encoder_weights(segmentor.encoder, weights, backbone(cfg.backbone).adapt_weights)
    if cfg.freeze_bn:
        freeze_batchnorm(segmentor.encoder)
    if cfg.frozen_stages:
        freeze_stages(segmentor.encoder, cfg.frozen_stages)
    return segmentor
