"""Class posteriors used to select pseudo-labels: the segmentation head, optionally fused with
the MMDL head's class posterior (docs/method.md, "Self-training hosts and pseudo-labels")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drsl.models.segmentor import Segmentor


def fused_probabilities(
    segmentor: Segmentor, regularizer: nn.Module | None, images: Tensor, fusion: str
) -> Tensor:
    """Class probabilities (B, C, h, w) at feature resolution.

    ``fusion``: "none" uses the segmentation head alone; "agree" zeroes the confidence of pixels
    where the two heads' argmax differ (they then fall below every class threshold); "product"
    multiplies both posteriors and renormalises.
    """
    output = segmentor(images)
    probs = F.softmax(output.logits.float(), dim=1)
    if fusion == "none" or regularizer is None:
        return probs
    mmdl = regularizer.class_posterior(output.features).float()
    if fusion == "agree":
        agree = probs.argmax(1, keepdim=True) == mmdl.argmax(1, keepdim=True)
        return probs * agree
    fused = probs * mmdl
    return fused / fused.sum(1, keepdim=True).clamp_min(torch.finfo(fused.dtype).tiny)
