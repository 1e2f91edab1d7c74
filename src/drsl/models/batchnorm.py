"""BatchNorm with fixed statistics that computes in the input's dtype, and freezing/calibration.

torchvision's ``FrozenBatchNorm2d`` multiplies by float32 buffers, so under bf16 autocast every
BatchNorm output (and every ReLU and residual sum after it) is promoted to float32 and each next
convolution casts back. :class:`FrozenBatchNorm2d` folds the statistics into one scale and shift
in float32 and applies them in the input's dtype: bf16 in, bf16 out.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn

from drsl.models.interfaces import Encoder


class FrozenBatchNorm2d(nn.Module):
    """``(x - running_mean) / sqrt(running_var + eps) * weight + bias`` with fixed buffers.

    The buffers are those of ``nn.BatchNorm2d`` (``num_batches_tracked`` is dropped when loading
    its state), so checkpoints load either way. The output has the input's dtype and memory format.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,  # type: ignore[no-untyped-def]
                              unexpected_keys, error_msgs) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class FrozenBatchNormAct2d(FrozenBatchNorm2d):
    """:class:`FrozenBatchNorm2d` followed by the dropout and activation of a timm
    ``BatchNormAct2d`` (EfficientNet), which are part of that layer; same state-dict keys."""

    def __init__(self, num_features: int, eps: float, drop: nn.Module, act: nn.Module) -> None:
        super().__init__(num_features, eps)
        self.drop, self.act = drop, act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(super().forward(x)))


def frozen_copy(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    """The fixed-statistics layer that computes what ``bn`` computes in eval mode."""
    act = getattr(bn, "act", None)
    frozen = (FrozenBatchNorm2d(bn.num_features, bn.eps) if act is None
              else FrozenBatchNormAct2d(bn.num_features, bn.eps, getattr(bn, "drop", nn.Identity()), act))
    frozen.load_state_dict(bn.state_dict())
    return frozen.to(bn.running_mean.device if bn.running_mean is not None else "cpu")


def freeze_batchnorm(module: nn.Module, within: set[int] | None = None) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` below ``module`` by its :func:`frozen_copy`; only those
    whose ``id`` is in ``within`` when given."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            if within is None or id(child) in within:
                setattr(module, name, frozen_copy(child))
        else:
            freeze_batchnorm(child, within)
    return module


def freeze_stages(encoder: Encoder, count: int) -> Encoder:
    """Fix the first ``count`` stages of ``encoder`` (stem included): their weights are not trained
    and their BatchNorm statistics stay as loaded (mmsegmentation's ``frozen_stages``)."""
    modules = [m for stage in encoder.stage_modules()[:count] for m in stage]
    for module in modules:
        module.requires_grad_(False)
    freeze_batchnorm(encoder, {id(sub) for m in modules for sub in m.modules()})
    return encoder


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm synchronised across processes; timm's converter, because
    torch's turns timm's ``BatchNormAct2d`` into a ``SyncBatchNorm`` that skips its activation."""
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(module)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: Iterable[Tensor]) -> nn.Module:
    """Set every BatchNorm's running statistics to their average over ``images`` (float batches
    the model takes), with torch's ``swa_utils.update_bn``; ``model`` keeps its train/eval mode.

    Randomly initialised weights with the default statistics (mean 0, variance 1) blow up through a
    deep network once the statistics are frozen; calibrated ones keep every layer normalised.
    """
    update_bn(images, model)
    return model
