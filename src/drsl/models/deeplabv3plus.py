"""A light DeepLab-v3+ decode head: ASPP-lite on the deepest map, refined with a stride-4 skip."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from drsl.models.interfaces import DecodeHead


def separable(in_channels: int, out_channels: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each with BatchNorm and ReLU (DeepLab-v3+'s decoder conv)."""
    return nn.Sequential(
        Conv2dNormActivation(in_channels, in_channels, 3, groups=in_channels),
        Conv2dNormActivation(in_channels, out_channels, 1),
    )


class DeepLabV3PlusHead(DecodeHead):
    """ASPP-lite (1x1 conv + image pooling) on the deepest map, upsampled onto the stride-4 map.

    The fused features (stride 4, ``channels`` wide) feed a 1x1 classifier and the DRSL MMDL head.
    """

    def __init__(
        self, in_channels: list[int], strides: list[int], num_classes: int,
        channels: int = 128, skip_channels: int = 48,
    ) -> None:
        super().__init__()
        deep = in_channels[-1]
        self.skip_index = strides.index(min(strides, key=lambda s: abs(s - 4)))
        self.aspp = Conv2dNormActivation(deep, channels, 1)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(deep, channels, 1), nn.ReLU())
        self.project = Conv2dNormActivation(2 * channels, channels, 1)
        self.skip = Conv2dNormActivation(in_channels[self.skip_index], skip_channels, 1)
        self.fuse = nn.Sequential(separable(channels + skip_channels, channels), separable(channels, channels))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.feature_channels = channels

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        deep, skip = features[-1], features[self.skip_index]
        pooled = self.image_pool(deep).expand(-1, -1, *deep.shape[-2:])
        context = self.project(torch.cat([self.aspp(deep), pooled], 1))
        context = F.interpolate(context, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        fused = self.fuse(torch.cat([context, self.skip(skip)], 1))
        return self.classifier(fused), fused
