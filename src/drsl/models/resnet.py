"""torchvision ResNet-50/101 encoders with stages 3 and 4 dilated (output stride 8)."""

from __future__ import annotations

from torch import Tensor
from torchvision.models import resnet50, resnet101

from drsl.models.interfaces import Encoder


class ResNetEncoder(Encoder):
    """A torchvision ResNet trunk (no classifier); maps after layer1..layer4 at strides 4, 8, 8, 8."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        factory = {50: resnet50, 101: resnet101}[depth]
        net = factory(weights=None, replace_stride_with_dilation=[False, True, True])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4
        )
        self.out_channels = [256, 512, 1024, 2048]
        self.strides = [4, 8, 8, 8]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [c1, c2, c3, self.layer4(c3)]
