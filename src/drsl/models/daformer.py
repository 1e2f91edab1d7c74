"""DAFormer's context-aware fusion decoder (Hoyer et al. 2022, Sec. 3.2 and Table 7).

Every encoder map is embedded to 256 channels by a 1x1 (linear) layer and upsampled to the
shallowest map's size (stride 4 for MiT); the concatenation is fused by an ASPP of depthwise-
separable dilated 3x3 convolutions (rates 1, 6, 12, 18; rate 1 is a 1x1 convolution, no image
pooling) followed by a 3x3 bottleneck, each with BatchNorm and ReLU; dropout and a 1x1 classifier
give the logits. The bottleneck's output is the fused feature map the DRSL MMDL head reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from drsl.models.interfaces import DecodeHead

#: DAFormer's published decoder (configs/_base_/models/daformer_sepaspp_mitb5.py).
EMBED_DIM = 256
CHANNELS = 256
RATES = (1, 6, 12, 18)
DROPOUT = 0.1


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1, groups: int = 1
) -> Conv2dNormActivation:
    """Conv (no bias) + BatchNorm + ReLU, the conv initialised as mmcv's ConvModule does."""
    block = Conv2dNormActivation(
        in_channels, out_channels, kernel_size, dilation=dilation, groups=groups
    )
    nn.init.kaiming_normal_(block[0].weight, mode="fan_out", nonlinearity="relu")
    return block


class SeparableASPP(nn.Module):
    """Parallel 1x1 and depthwise-separable dilated 3x3 branches, concatenated, then a 3x3 bottleneck."""

    def __init__(self, in_channels: int, channels: int, rates: tuple[int, ...] = RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            conv_bn_relu(in_channels, channels)
            if rate == 1
            else nn.Sequential(
                conv_bn_relu(in_channels, in_channels, 3, dilation=rate, groups=in_channels),
                conv_bn_relu(in_channels, channels),
            )
            for rate in rates
        )
        self.bottleneck = conv_bn_relu(len(rates) * channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.branches], dim=1))


class DAFormerHead(DecodeHead):
    """Multi-level embedding, upsampling to the first map's size, context-aware fusion, classifier."""

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        embed_dim: int = EMBED_DIM,
        channels: int = CHANNELS,
        rates: tuple[int, ...] = RATES,
    ) -> None:
        super().__init__()
        self.embed = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in in_channels)
        self.fuse = SeparableASPP(len(in_channels) * embed_dim, channels, rates)
        self.dropout = nn.Dropout2d(DROPOUT)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        self.feature_channels = channels

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        size = features[0].shape[-2:]
        embedded = []
        for embed, x in zip(self.embed, features):
            x = embed(x)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            embedded.append(x)
        fused = self.fuse(torch.cat(embedded, dim=1))
        return self.classifier(self.dropout(fused)), fused
