"""An exponential-moving-average teacher: frozen copies of the student's parts (segmentor and
regulariser), updated after each optimiser step."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMATeacher(nn.Module):
    """Keeps ``teacher = m * teacher + (1 - m) * student``; the update count is saved with it.

    The momentum ramps up as ``min(momentum, (1 + n) / (10 + n))`` so an early teacher follows
    the student quickly; ``n`` is a buffer, so a resumed run continues the same schedule.
    """

    def __init__(self, student: list[nn.Module], momentum: float) -> None:
        super().__init__()
        self.model = nn.ModuleList(copy.deepcopy(part) for part in student)
        self.model.requires_grad_(False)
        self.model.eval()
        self.momentum = momentum
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> "EMATeacher":
        """The teacher always stays in eval mode (fixed BatchNorm statistics)."""
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def update(self, student: list[nn.Module]) -> None:
        """Move the teacher towards the student parts' weights and copy their buffers."""
        n = float(self.updates.item())
        momentum = min(self.momentum, (1.0 + n) / (10.0 + n))
        parts = nn.ModuleList(student)
        for teacher_param, student_param in zip(self.model.parameters(), parts.parameters(), strict=True):
            teacher_param.lerp_(student_param.detach(), 1.0 - momentum)
        for teacher_buffer, student_buffer in zip(self.model.buffers(), parts.buffers(), strict=True):
            teacher_buffer.copy_(student_buffer)
        self.updates += 1
