"""The training module shared by every method: supervised source loss, optional target loss on
pseudo-labels (from files or from an EMA teacher), optional DRSL regulariser.

source-only / oracle: CE(source), optionally + the ImageNet feature distance
(``adapt.feature_distance``). CBST: + lambda_target * CE(target, pseudo-labels).
DRSL: + the regulariser's lambda_mm * MMDL + lambda_sma * SMA (it weighs its own terms).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drsl.adaptation.ema import EMATeacher
from drsl.adaptation.feature_distance import ImageNetFeatureDistance
from drsl.adaptation.posterior import fuse, head_posteriors
from drsl.adaptation.pseudo_labels import select_class_balanced
from drsl.config import Config, OptimConfig
from drsl.data.labels import IGNORE_INDEX
from drsl.engine.distributed import global_mean
from drsl.engine.trainer import StepOutput
from drsl.models.segmentor import Segmentor


def segmentation_loss(
    logits: Tensor, labels: Tensor, weight: Tensor | None = None, over_all_pixels: bool = False
) -> Tensor:
    """Pixel cross-entropy at label resolution (logits upsampled bilinearly), ignoring 255,
    optionally weighted per pixel by ``weight`` (same shape as ``labels``).

    A mean over the valid pixels of every process (:func:`global_mean`), or with
    ``over_all_pixels`` over all of them, ignored ones counting 0 (mmsegmentation 0.x, which
    DAFormer trains with). Under DDP each pixel weighs the same whichever process holds it, and a
    process without valid pixels adds a graph-connected zero. No host synchronisation.
    """
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    if weight is None:
        total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    else:
        pixels = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")
        total = (pixels * weight).sum()
    count = labels.new_tensor(labels.numel()) if over_all_pixels else (labels != IGNORE_INDEX).sum()
    return global_mean(total, count)


def to_float_images(images: Tensor) -> Tensor:
    """uint8 images to float in [0, 1] (float inputs are passed through)."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


class SelfTrainingModule(nn.Module):
    """Segmentor plus, depending on the method, a DRSL regulariser and an EMA teacher."""

    def __init__(
        self,
        segmentor: Segmentor,
        config: Config,
        regularizer: nn.Module | None = None,
        teacher: EMATeacher | None = None,
    ) -> None:
        super().__init__()
        self.segmentor = segmentor
        self.regularizer = regularizer
        self.teacher = teacher
        self.adapt = config.adapt
        self.num_classes = config.model.num_classes
        #: Not an nn.Module, so its frozen encoder stays out of checkpoints and DDP.
        self.imagenet_distance = (
            ImageNetFeatureDistance(config) if config.adapt.feature_distance.weight > 0 else None
        )

    @property
    def uses_target(self) -> bool:
        """True for methods that train on target pseudo-labels."""
        return self.adapt.method in ("self_training", "drsl")

    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        """Encoder at the base learning rate; classifier and MMDL head at ``head_lr_mult`` times it."""
        heads = list(self.segmentor.head_parameters())
        if self.regularizer is not None:
            heads += [p for p in self.regularizer.parameters() if p.requires_grad]
        return [
            {"params": [p for p in self.segmentor.encoder_parameters() if p.requires_grad], "lr_mult": 1.0},
            {"params": heads, "lr_mult": optim.head_lr_mult},
        ]

    def student_parts(self) -> list[nn.Module]:
        """The modules an EMA teacher copies: segmentor and, for DRSL, the regulariser."""
        return [self.segmentor] + ([self.regularizer] if self.regularizer is not None else [])

    def get_extra_state(self) -> dict[str, Tensor]:
        """The regulariser's sampling RNG, so a resumed run draws the same SMA samples."""
        return {"sma_rng": self.regularizer.get_rng_state()} if self.regularizer is not None else {}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`get_extra_state`."""
        if self.regularizer is not None and "sma_rng" in state:
            self.regularizer.set_rng_state(state["sma_rng"])

    def teacher_parts(self) -> tuple[Segmentor, nn.Module | None]:
        """The EMA teacher's segmentor and regulariser (None without DRSL)."""
        assert self.teacher is not None
        model = self.teacher.model
        return model[0], model[1] if len(model) > 1 else None  # type: ignore[return-value]

    def fusion_at(self, iteration: int) -> str:
        """The pseudo-label fusion in force: none until the MMDL head has warmed up."""
        return "none" if iteration < self.adapt.drsl.warmup_iters else self.adapt.pseudo_label.fusion

    @torch.no_grad()
    def teacher_predictions(self, target_images: Tensor, size: torch.Size, iteration: int) -> tuple[Tensor, Tensor]:
        """The EMA teacher's predicted classes (255 where fusion vetoes) and confidence scores
        -log(1 - p) at label size ``size``, fused after upsampling (see :func:`fuse`)."""
        segmentor, regularizer = self.teacher_parts()
        fusion = self.fusion_at(iteration)
        posteriors = head_posteriors(segmentor, regularizer, target_images, fusion)
        return fuse(self.upsample_posteriors(posteriors, size), self.num_classes, fusion)

    def upsample_posteriors(self, posteriors: Tensor, size: torch.Size) -> Tensor:
        """The teacher's posteriors at label size ``size``: interpolated bilinearly."""
        return F.interpolate(posteriors, size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def teacher_pseudo_labels(self, target_images: Tensor, size: torch.Size, iteration: int) -> Tensor:
        """Class-balanced pseudo-labels for a target batch from the EMA teacher (online host)."""
        predicted, score = self.teacher_predictions(target_images, size, iteration)
        return select_class_balanced(predicted, score, self.num_classes, self.adapt.online_portion)

    def add_feature_distance(
        self, loss: Tensor, logs: dict[str, Tensor | float], features: Tensor, images: Tensor, labels: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor | float]]:
        """``loss`` plus the weighted ImageNet feature distance of the source crops ``images``
        (``features``: their deepest encoder map), logged as ``feature_distance``; unchanged
        when it is off."""
        if self.imagenet_distance is None:
            return loss, logs
        distance = self.imagenet_distance(self.segmentor, features, images, labels)
        logs["feature_distance"] = distance.detach()
        return loss + self.imagenet_distance.weight * distance, logs

    def forward(self, batch: dict[str, Any], iteration: int = 0) -> StepOutput:
        """Losses for one (micro-)batch ``{"source": {...}, "target": {...}}``."""
        source = batch["source"]
        source_images = to_float_images(source["image"])
        if not self.uses_target:
            maps = self.segmentor.encode(source_images)
            logits, _ = self.segmentor.decoder(maps)
            loss = segmentation_loss(logits, source["label"])
            logs: dict[str, Tensor | float] = {"loss_source": loss.detach()}
            return StepOutput(*self.add_feature_distance(loss, logs, maps[-1], source_images, source["label"]))

        target = batch["target"]
        target_images = to_float_images(target["image"])
        if self.teacher is not None:
            target_labels = self.teacher_pseudo_labels(
                target_images, target["label"].shape[-2:], iteration
            )
        else:
            target_labels = target["label"]
        images = torch.cat([source_images, target_images])
        output = self.segmentor(images)
        n = source_images.shape[0]
        loss_source = segmentation_loss(output.logits[:n], source["label"])
        loss_target = segmentation_loss(output.logits[n:], target_labels)
        loss = loss_source + self.adapt.lambda_target * loss_target
        logs: dict[str, Tensor | float] = {
            "loss_source": loss_source.detach(),
            "loss_target": loss_target.detach(),
            "pseudo_coverage": (target_labels != IGNORE_INDEX).float().mean(),
        }
        if self.regularizer is not None:
            reg_loss, reg_logs = self.regularizer(
                output.features[:n], source["label"], output.features[n:], target_labels, step=iteration
            )
            loss = loss + reg_loss
            logs.update({f"drsl/{k}": v for k, v in reg_logs.items()})
        logs["loss"] = loss.detach()
        return StepOutput(loss, logs)
