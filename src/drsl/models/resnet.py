"""torchvision ResNet-50/101 encoders, the deepest stages dilated down to the output stride."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import resnet50, resnet101

from drsl.models.interfaces import Encoder, InputNorm

#: Caffe ResNets (the DeepLab-v2 init): BGR pixels in 0-255 minus the ImageNet mean, no std division.
CAFFE_NORM = InputNorm(mean=(104.008, 116.669, 122.675), std=(1.0, 1.0, 1.0), bgr=True, scale=255.0)


class ResNetEncoder(Encoder):
    """A torchvision ResNet trunk (no classifier); maps after layer1..layer4 at strides 4, 8, 16, 32
    capped by ``output_stride`` (8: 4, 8, 8, 8)."""

    def __init__(self, depth: int, output_stride: int = 8) -> None:
        super().__init__()
        factory = {50: resnet50, 101: resnet101}[depth]
        dilate = [False, output_stride <= 8, output_stride <= 16]
        net = factory(weights=None, replace_stride_with_dilation=dilate)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4
        )
        self.out_channels = [256, 512, 1024, 2048]
        self.strides = [min(s, output_stride) for s in (4, 8, 16, 32)]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [c1, c2, c3, self.layer4(c3)]

    def stage_modules(self) -> list[list[nn.Module]]:
        return [[self.conv1, self.bn1, self.layer1], [self.layer2], [self.layer3], [self.layer4]]


class DeepLabResNetEncoder(ResNetEncoder):
    """The Caffe ResNet-101 of DeepLab-v2 (``DeepLab_resnet_pretrained_init`` weights), in torchvision
    module names: the stride of a downsampling block on its first 1x1 conv, max-pool with
    ``ceil_mode``, every block of a dilated stage at the stage's full dilation, Caffe input
    convention (:data:`CAFFE_NORM`)."""

    input_norm = CAFFE_NORM

    def __init__(self, depth: int = 101, output_stride: int = 8) -> None:
        super().__init__(depth, output_stride)
        self.maxpool.ceil_mode = True
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            first = layer[0]
            first.conv1.stride, first.conv2.stride = first.conv2.stride, first.conv1.stride
            dilation = layer[-1].conv2.dilation
            first.conv2.dilation = first.conv2.padding = dilation
