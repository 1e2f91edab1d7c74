"""Encoders with output stride 8: dilated torchvision ResNets and a light dilated CPU backbone."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import resnet50, resnet101
from torchvision.models.resnet import BasicBlock


class ResNetEncoder(nn.Module):
    """A torchvision ResNet-50/101 with stages 3 and 4 dilated (output stride 8), no classifier."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        factory = {50: resnet50, 101: resnet101}[depth]
        net = factory(weights=None, replace_stride_with_dilation=[False, True, True])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4
        )
        self.out_channels = 2048

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


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


class LightEncoder(nn.Module):
    """A small ResNet-style encoder (BasicBlocks, stages 3-4 dilated, output stride 8) for CPUs."""

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
        self.out_channels = c4

    def forward(self, x: Tensor) -> Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
