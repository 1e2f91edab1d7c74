"""What an encoder and a decode head promise the Segmentor (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from drsl.config import ConfigError


@dataclass(frozen=True)
class InputNorm:
    """How an encoder's weights expect pixels: ``(flip_to_bgr(rgb01) * scale - mean) / std``.

    ``mean`` and ``std`` are in the encoder's channel order (BGR when ``bgr``) and value scale.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False
    scale: float = 1.0


#: torchvision / timm ImageNet statistics on RGB pixels in [0, 1].
IMAGENET_NORM = InputNorm(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


class Encoder(nn.Module):
    """Base class of encoders: normalised images (B, 3, H, W) -> feature maps, shallow to deep."""

    out_channels: list[int]
    strides: list[int]
    input_norm: InputNorm = IMAGENET_NORM

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def stage_modules(self) -> list[list[nn.Module]]:
        """The modules that compute each output map from the previous one (the stem in the first)."""
        raise ConfigError(f"config key 'model.frozen_stages': the {type(self).__name__} encoder does not list its stages")


class DecodeHead(nn.Module):
    """Base class of decode heads: encoder feature maps -> (logits, fused features)."""

    feature_channels: int

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError
