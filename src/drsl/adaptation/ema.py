"""An exponential-moving-average teacher: frozen copies of the student's parts (segmentor and
regulariser), updated after each optimiser step."""

from __future__ import annotations

import copy

import torch
from timm.layers import DropPath
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd


class EMATeacher(nn.Module):
    """Keeps ``teacher = m * teacher + (1 - m) * student`` over the parameters; the update count is
    saved with it, so a resumed run continues the same schedule.

    The momentum of the n-th update (n = 1, 2, ...) is ``min(1 - 1 / (n + 1), momentum)`` (Mean
    Teacher's ramp, as DAFormer's ``DACS._update_ema``): 0.5 first, ``momentum`` from update
    ``1 / (1 - momentum) - 1`` on.

    With ``batch_statistics`` (DAFormer) the teacher follows the module's train/eval mode with
    Dropout and DropPath always off, so in training its BatchNorm layers normalise each batch it
    labels with that batch's statistics and keep running statistics of their own; every other
    buffer is copied from the student. Without it the teacher always runs in eval mode and copies
    every buffer, BatchNorm statistics included.
    """

    def __init__(self, student: list[nn.Module], momentum: float, batch_statistics: bool = False) -> None:
        super().__init__()
        self.model = nn.ModuleList(copy.deepcopy(part) for part in student)
        self.model.requires_grad_(False)
        self.momentum = momentum
        self.batch_statistics = batch_statistics
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.train()

    def train(self, mode: bool = True) -> "EMATeacher":
        """Train mode only with ``batch_statistics``; Dropout and DropPath stay off either way."""
        super().train(mode and self.batch_statistics)
        for module in self.model.modules():
            if isinstance(module, (_DropoutNd, DropPath)):
                module.eval()
        return self

    @torch.no_grad()
    def update(self, student: list[nn.Module]) -> None:
        """Move the teacher's parameters towards the student parts' and copy their buffers
        (except the BatchNorm statistics of a ``batch_statistics`` teacher)."""
        momentum = min(1.0 - 1.0 / (float(self.updates.item()) + 2.0), self.momentum)
        parts = nn.ModuleList(student)
        for teacher_param, student_param in zip(self.model.parameters(), parts.parameters(), strict=True):
            teacher_param.lerp_(student_param.detach(), 1.0 - momentum)
        for teacher_module, student_module in zip(self.model.modules(), parts.modules(), strict=True):
            if self.batch_statistics and isinstance(teacher_module, _BatchNorm):
                continue
            for name, buffer in teacher_module.named_buffers(recurse=False):
                buffer.copy_(student_module.get_buffer(name))
        self.updates += 1
