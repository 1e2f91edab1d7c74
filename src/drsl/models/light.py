"""A small ResNet-style encoder for CPUs (BasicBlocks, stages 3-4 dilated, output stride 8)."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from drsl.models.interfaces import Encoder


def _stage(in_ch: int, out_ch: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    """A stage of torchvision BasicBlocks; dilation is applied through the convs' padding."""
    layers: list[nn.Module] = []
    for i in range(blocks):
        downsample = None
        block_in = in_ch if i == 0 else out_ch
        block_stride = stride if i == 0 else 1
        if block_stride != 1 or block_in != out_ch:
            downsample = nn.Sequential(
                nn.Conv2d(block_in, out_ch, 1, stride=block_stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        block = BasicBlock(block_in, out_ch, stride=block_stride, downsample=downsample)
        if dilation > 1:
            for conv in (block.conv1, block.conv2):
                conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)
        layers.append(block)
    return nn.Sequential(*layers)


class LightEncoder(Encoder):
    """Stage channels 16w, 32w, 64w, 128w at strides 4, 8, 8, 8; ``depth`` blocks per stage."""

    def __init__(self, width: int = 2, depth: int = 1) -> None:
        super().__init__()
        c1, c2, c3, c4 = (16 * width, 32 * width, 64 * width, 128 * width)
        self.stem = nn.Sequential(
            nn.Conv2d(3, c1, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
        )
        self.layer1 = _stage(c1, c1, depth, stride=2, dilation=1)
        self.layer2 = _stage(c1, c2, depth, stride=2, dilation=1)
        self.layer3 = _stage(c2, c3, depth, stride=1, dilation=2)
        self.layer4 = _stage(c3, c4, depth, stride=1, dilation=4)
        self.out_channels = [c1, c2, c3, c4]
        self.strides = [4, 8, 8, 8]

    def forward(self, x: Tensor) -> list[Tensor]:
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [c1, c2, c3, self.layer4(c3)]

    def stage_modules(self) -> list[list[nn.Module]]:
        return [[self.stem, self.layer1], [self.layer2], [self.layer3], [self.layer4]]
