"""The named backbones and decode heads that ``model.backbone`` and ``model.decoder`` choose from.

A backbone is a builder (config -> :class:`~drsl.models.interfaces.Encoder`) and a weight adapter
(the state dict of a weights file -> the encoder's own keys) for the file format its public weights
come in; ``timm/NAME`` is any timm encoder. User code and plug-ins add entries to both registries
(:mod:`drsl.plugins`, docs/extending.md). The network modules are imported when a network is
built, not when a config names one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from drsl.config import ConfigError, ModelConfig
from drsl.plugins import Deferred, Registry

if TYPE_CHECKING:
    from torch import Tensor

    from drsl.models.interfaces import DecodeHead, Encoder

StateDict = dict[str, "Tensor"]


@dataclass(frozen=True)
class Backbone:
    """How to build an encoder and how to read its pretrained weights files."""

    build: Callable[[ModelConfig], Encoder]
    #: A weights file's state dict -> the encoder's keys (prefixes, dropped classifiers, renames).
    adapt_weights: Callable[[StateDict], StateDict] = Deferred("drsl.models.weights:torchvision_state")
    #: The weights file an installed package ships for it (``model.pretrained: bundled``), if any.
    bundled_weights: Callable[[], Path] | None = None


def _light(cfg: ModelConfig) -> Encoder:
    if cfg.output_stride != 8:
        raise ConfigError(f"config key 'model.output_stride': the light backbone has output stride 8, not {cfg.output_stride}")
    from drsl.models.light import LightEncoder

    return LightEncoder(cfg.light_width, cfg.light_depth)


def _resnet(depth: int, cfg: ModelConfig) -> Encoder:
    from drsl.models.resnet import ResNetEncoder

    return ResNetEncoder(depth, cfg.output_stride)


def _deeplab_resnet(cfg: ModelConfig) -> Encoder:
    from drsl.models.resnet import DeepLabResNetEncoder

    return DeepLabResNetEncoder(101, cfg.output_stride)


def _efficientnet(cfg: ModelConfig) -> Encoder:
    from drsl.models.efficientnet import EfficientNetEncoder

    return EfficientNetEncoder(cfg.output_stride)


def _mit(variant: str, cfg: ModelConfig) -> Encoder:
    if cfg.output_stride != 32:
        raise ConfigError(
            f"config key 'model.output_stride': MiT encoders have output stride 32, not {cfg.output_stride} (set it to 32)"
        )
    from drsl.models.mit import MiTEncoder

    return MiTEncoder(variant)


def _timm(name: str) -> Backbone:
    from drsl.models.timm_encoder import TimmEncoder, check_model_name, timm_weights

    check_model_name(name)
    return Backbone(lambda cfg: TimmEncoder(name, cfg.output_stride), adapt_weights=timm_weights(name))


#: SegFormer's Mix Transformers (drsl.models.mit.MIT_VARIANTS).
MIT_NAMES = tuple(f"mit_b{size}" for size in range(6))

BACKBONES: Registry[Backbone] = Registry(
    "backbone", "model.backbone", "drsl.backbones",
    {
        "light": Backbone(_light),
        "resnet50": Backbone(lambda cfg: _resnet(50, cfg)),
        "resnet101": Backbone(lambda cfg: _resnet(101, cfg)),
        "resnet101_deeplab": Backbone(_deeplab_resnet, adapt_weights=Deferred("drsl.models.weights:deeplab_state")),
        "efficientnet_lite0": Backbone(
            _efficientnet,
            adapt_weights=Deferred("drsl.models.efficientnet:encoder_state"),
            bundled_weights=Deferred("drsl.models.efficientnet:bundled_weights"),
        ),
        **{
            name: Backbone(lambda cfg, name=name: _mit(name, cfg), adapt_weights=Deferred("drsl.models.mit_weights:mit_state"))
            for name in MIT_NAMES
        },
    },
    accepts=lambda entry: isinstance(entry, Backbone), expects="a drsl.models.registry.Backbone",
    families={"timm/": _timm},
)


def _aspp(encoder: Encoder, cfg: ModelConfig) -> DecodeHead:
    from drsl.models.deeplabv2 import ASPPHead

    return ASPPHead(encoder.out_channels[-1], cfg.num_classes, cfg.aspp)


def _deeplabv3plus(encoder: Encoder, cfg: ModelConfig) -> DecodeHead:
    from drsl.models.deeplabv3plus import DeepLabV3PlusHead

    return DeepLabV3PlusHead(encoder.out_channels, encoder.strides, cfg.num_classes, cfg.decoder_channels)


def _daformer(encoder: Encoder, cfg: ModelConfig) -> DecodeHead:
    from drsl.models.daformer import DAFormerHead

    return DAFormerHead(encoder.out_channels, cfg.num_classes)


#: Decode head builders: (encoder, config) -> head producing ``cfg.num_classes`` logits.
DecoderBuilder = Callable[["Encoder", ModelConfig], "DecodeHead"]
DECODERS: Registry[DecoderBuilder] = Registry(
    "decoder", "model.decoder", "drsl.decoders",
    {"aspp": _aspp, "deeplabv3plus": _deeplabv3plus, "daformer": _daformer},
    accepts=callable, expects="a function (encoder, model config) -> DecodeHead",
)


def backbone(name: str) -> Backbone:
    """The registered backbone ``name``, or a ConfigError listing the known ones."""
    return BACKBONES.lookup(name)


def pretrained_path(cfg: ModelConfig) -> Path | None:
    """The initial weights file ``model.pretrained`` names (``bundled``: the backbone's packaged one)."""
    if cfg.pretrained != "bundled":
        return Path(cfg.pretrained) if cfg.pretrained else None
    bundled = backbone(cfg.backbone).bundled_weights
    if bundled is None:
        raise ConfigError(f"config key 'model.pretrained': the {cfg.backbone} backbone has no bundled weights; give a file")
    return bundled()


def build_encoder(cfg: ModelConfig) -> Encoder:
    """The encoder ``model.backbone`` names, with random weights."""
    return backbone(cfg.backbone).build(cfg)


def build_decoder(encoder: Encoder, cfg: ModelConfig) -> DecodeHead:
    """The decode head ``model.decoder`` names, sized for ``encoder``."""
    return DECODERS.lookup(cfg.decoder)(encoder, cfg)
