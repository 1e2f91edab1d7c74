"""The DeepLab-v2 ASPP decode head: parallel dilated 3x3 convolutions whose logits are summed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from drsl.models.interfaces import DecodeHead

#: Named ASPP variants. "rates_6_12" reproduces public code that sums only the first two branches.
ASPP_RATES: dict[str, tuple[int, ...]] = {
    "full": (6, 12, 18, 24),
    "rates_6_12": (6, 12),
}


class ASPPHead(DecodeHead):
    """Logits from the deepest encoder map; its fused features are that map, unchanged."""

    def __init__(self, in_channels: int, num_classes: int, variant: str = "full") -> None:
        super().__init__()
        if variant not in ASPP_RATES:
            raise ValueError(f"unknown ASPP variant '{variant}' (known: {sorted(ASPP_RATES)})")
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate)
            for rate in ASPP_RATES[variant]
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.feature_channels = in_channels

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        deepest = features[-1]
        return torch.stack([branch(deepest) for branch in self.branches]).sum(0), deepest
