"""Class posteriors for pseudo-labels: the segmentation head, optionally fused with the MMDL head's
class posterior (docs/method.md, "Self-training hosts and pseudo-labels"), and the confidence score that ranks them.

Fusion happens at label resolution, after every upsampling and test-time average: both heads'
posteriors travel through inference side by side (:func:`head_posteriors` stacks them) and
:func:`fuse` combines them pixel by pixel, so a vetoed pixel is vetoed exactly where it is labelled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drsl.config import FUSIONS
from drsl.data.labels import IGNORE_INDEX
from drsl.models.segmentor import Segmentor

#: The class posteriors a DRSL model can be evaluated with (``drsl evaluate --head``).
HEADS = ("segmentation", "mmdl", "product")


def both_heads(segmentor: Segmentor, regularizer: nn.Module | None, images: Tensor) -> tuple[Tensor, Tensor | None]:
    """Float32 segmentation softmax and MMDL class posterior (None without a regulariser), each
    (B, C, h, w), from one forward."""
    output = segmentor(images)
    probs = F.softmax(output.logits.float(), dim=1)
    if regularizer is None:
        return probs, None
    return probs, regularizer.class_posterior(output.features).float()


def head_posteriors(segmentor: Segmentor, regularizer: nn.Module | None, images: Tensor, fusion: str) -> Tensor:
    """Float32 posteriors at feature resolution: (B, C, h, w), or (B, 2C, h, w) with the MMDL
    class posterior stacked after the segmentation softmax when ``fusion`` needs it."""
    probs, mmdl = both_heads(segmentor, regularizer if uses_mmdl(fusion, regularizer) else None, images)
    return probs if mmdl is None else torch.cat([probs, mmdl], dim=1)


def head_probabilities(segmentor: Segmentor, regularizer: nn.Module | None, images: Tensor, head: str) -> Tensor:
    """Float32 class probabilities (B, C, h, w) of one ``head``: the segmentation softmax, the MMDL
    head's class posterior, or the normalised product of both (per inference pass)."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if head != "segmentation" and regularizer is None:
        raise ValueError(f"the {head!r} head needs an MMDL head (a DRSL model)")
    probs, mmdl = both_heads(segmentor, None if head == "segmentation" else regularizer, images)
    if mmdl is None:
        return probs
    if head == "mmdl":
        return mmdl
    product = probs * mmdl
    return product / product.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)


def uses_mmdl(fusion: str, regularizer: nn.Module | None) -> bool:
    """Whether ``fusion`` reads the MMDL posterior (and a regulariser exists to give it)."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    return fusion != "none" and regularizer is not None


def max_over_classes(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x.max(dim=1)`` of (B, C, H, W) maps: values and the first index reaching them (C < 256).

    Two vectorised passes (a max, then the first class equal to it); ``torch.max`` with indices
    over the strided class dimension is several times slower on CPUs.
    """
    top = x.amax(dim=1, keepdim=True)
    rank = torch.arange(x.shape[1], 0, -1, dtype=torch.uint8, device=x.device).view(1, -1, 1, 1)
    first = x.shape[1] - (x == top).to(torch.uint8).mul_(rank).amax(dim=1).long()
    return top.squeeze(1), first


def ranked_posterior(posteriors: Tensor, num_classes: int, fusion: str) -> Tensor:
    """The float32 (B, C, H, W) posterior whose classes :func:`fuse` ranks: the segmentation
    head's, or with ``fusion`` "product" and the MMDL posterior stacked, the (unnormalised) product
    of both. A view of ``posteriors`` where no product is taken."""
    seg = posteriors[:, :num_classes].float()
    if posteriors.shape[1] == 2 * num_classes and fusion == "product":
        return seg * posteriors[:, num_classes:].float()
    return seg


def runner_up(posteriors: Tensor, num_classes: int, fusion: str) -> tuple[Tensor, Tensor]:
    """The second class of the posterior that :func:`fuse` ranks (the first class reaching the
    second largest value, the top class excluded) and its score ``-log(1 - p2)``, each (B, H, W),
    computed as :func:`fuse` computes the top class's (p2 normalised by the posterior's sum)."""
    fused = ranked_posterior(posteriors, num_classes, fusion).clone()
    total = fused.sum(dim=1)
    _, top = max_over_classes(fused)
    second, second_class = max_over_classes(fused.scatter_(1, top.unsqueeze(1), -1.0))
    second = second.clamp_min(0.0)
    tiny = torch.finfo(torch.float32).tiny
    score = (torch.log(total.clamp_min(tiny)) - torch.log((total - second).clamp_min(tiny))).clamp_min(0.0)
    return second_class, score


def fuse(posteriors: Tensor, num_classes: int, fusion: str, inplace: bool = False) -> tuple[Tensor, Tensor]:
    """Predicted classes and confidence scores (each (B, H, W)) from posteriors at label resolution.

    ``posteriors`` is (B, C, H, W) or, with the MMDL posterior stacked (see
    :func:`head_posteriors`), (B, 2C, H, W). ``fusion``: "none" or a single map uses the
    segmentation head alone; "agree" vetoes (class ``IGNORE_INDEX``) every pixel where the two
    heads' argmax differ; "confident" only those where, in addition, the MMDL head's top posterior
    exceeds the segmentation head's; "product" ranks the normalised product of both posteriors.

    The score is ``-log(1 - p)`` of the kept posterior's maximum p, computed as
    ``-log(sum of the other classes' posteriors)`` so that it keeps resolving confidences whose p
    rounds to 1 in float32; it is float32 and finite (at most about 87). ``inplace`` lets it
    overwrite ``posteriors`` (float32) instead of copying them.
    """
    fused = ranked_posterior(posteriors, num_classes, fusion)
    top, predicted = max_over_classes(fused)
    product = posteriors.shape[1] == 2 * num_classes and fusion == "product"
    owned = inplace or product  # zero the top class where it may be overwritten
    others = (fused.scatter_ if owned else fused.scatter)(1, predicted.unsqueeze(1), 0.0).sum(dim=1)
    tiny = torch.finfo(torch.float32).tiny
    # p = top / (top + others): -log(1 - p) = log(top + others) - log(others).
    score = (torch.log((top + others).clamp_min(tiny)) - torch.log(others.clamp_min(tiny))).clamp_min(0.0)
    if posteriors.shape[1] == 2 * num_classes and fusion in ("agree", "confident"):
        mmdl_top, mmdl_class = max_over_classes(posteriors[:, num_classes:].float())
        vetoed = mmdl_class != predicted
        if fusion == "confident":
            vetoed &= mmdl_top > top
        predicted = torch.where(vetoed, IGNORE_INDEX, predicted)
    return predicted, score
