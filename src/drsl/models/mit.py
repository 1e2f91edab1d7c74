"""SegFormer's Mix Transformer encoders, MiT-B0 to MiT-B5, built from timm's PVT-v2 stages.

MiT and PVT-v2 are one design (Xie et al. 2021; Wang et al. 2021): overlapping patch embeddings
(7x7 stride 4, then 3x3 stride 2), self-attention whose keys and values come from a spatially
reduced map (reduction 8, 4, 2, 1; torch's ``scaled_dot_product_attention``), and a Mix-FFN with a
depthwise 3x3 convolution instead of position embeddings. MiT uses an MLP ratio of 4 at every
stage and stochastic depth 0.1; given those, timm's ``PyramidVisionTransformerV2`` is MiT, module
for module, so drsl builds it from timm rather than by hand (weights: :mod:`drsl.models.mit_weights`).
"""

from __future__ import annotations

from torch import Tensor, nn
from timm.models.pvt_v2 import PyramidVisionTransformerV2

from drsl.models.interfaces import Encoder

#: Stage widths and depths of the published variants (SegFormer, Table 6).
MIT_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}
NUM_HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
MLP_RATIOS = (4.0, 4.0, 4.0, 4.0)


class MiTEncoder(Encoder):
    """A MiT variant without its ImageNet classifier; four maps at strides 4, 8, 16 and 32.

    Expects ImageNet-normalised RGB input (the encoder's default ``input_norm``), as the published
    weights were trained.
    """

    def __init__(self, variant: str, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        dims, depths = MIT_VARIANTS[variant]
        net = PyramidVisionTransformerV2(
            num_classes=0, depths=depths, embed_dims=dims, num_heads=NUM_HEADS,
            sr_ratios=SR_RATIOS, mlp_ratios=MLP_RATIOS, qkv_bias=True, drop_path_rate=drop_path_rate,
        )
        self.patch_embed, self.stages = net.patch_embed, net.stages
        self.out_channels = list(dims)
        self.strides = [4, 8, 16, 32]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.patch_embed(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def stage_modules(self) -> list[list[nn.Module]]:
        first, *rest = self.stages
        return [[self.patch_embed, first], *([stage] for stage in rest)]
