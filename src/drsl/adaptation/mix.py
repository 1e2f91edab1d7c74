"""The mixing host (``adapt.host: mix``), DAFormer's (its ``DACS`` module, after DACS), with the DRSL regulariser.

One step: the EMA teacher, in train mode without dropout (BatchNorm on the batch's statistics),
labels the clean (geometric-only augmented) target crop; ClassMix pastes the pixels of half the
classes of each source crop onto its target crop; the mixed image is strongly augmented. The
student sees the source crops and the mixed crops in two forwards (so BatchNorm normalises each
batch by itself) and learns the source labels and the mixed labels, the pasted pixels at weight 1
and the teacher-labelled pixels at the batch's share of confident pixels (at or above
``adapt.mix.confidence_threshold``), 0 in the ignored top and bottom rows; each cross-entropy
averages over all pixels of its crops (mmsegmentation 0.x). With DRSL, the regulariser sees the
source crops and the pasted pixels as source, the confidently labelled target pixels of the mixed
image (or all of them: ``adapt.mix.drsl_target``) as target (MMDL on both, mode alignment between
them), and the teacher's labels are optionally fused with its MMDL posterior.
Rare classes come from the class-balanced source sampler (``data.source_sampling``). The trainer
owns the loop; the teacher in the checkpoint and the mixing draws (from seed, iteration and each
image's position in the global batch) make it resumable and independent of the process count.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from drsl.adaptation.classmix import (
    StrongAugment,
    class_mix_masks,
    confident_pixels,
    confident_share,
    mix,
    pseudo_weights,
    step_generator,
    threshold_score,
)
from drsl.adaptation.context import RunContext, hide_target_labels, joint_batches
from drsl.adaptation.pseudo_label_pass import report_teacher_quality
from drsl.adaptation.pseudo_labels import LEVELS_PER_NAT
from drsl.adaptation.self_training import SelfTrainingModule, segmentation_loss, to_float_images
from drsl.config import Config
from drsl.data.labels import IGNORE_INDEX
from drsl.data.transforms import build_train_transform
from drsl.engine.sampling import SeededView
from drsl.engine.trainer import StepOutput
from drsl.models.segmentor import Segmentor


class MixTrainingModule(SelfTrainingModule):
    """The training module of the mixing host: a :class:`SelfTrainingModule` (segmentor,
    optional regulariser, EMA teacher) whose step mixes domains (see the module docstring)."""

    def __init__(self, segmentor: Segmentor, config: Config, regularizer: nn.Module | None = None) -> None:
        super().__init__(segmentor, config, regularizer)
        settings = config.adapt.mix
        self.settings = settings
        self.seed = config.seed
        self.strong = StrongAugment(settings.jitter_strength, settings.jitter_prob, settings.blur_prob)
        self._micro = (-1, 0)  # (iteration, micro-batch within it): one mixing draw each

    def _generators(self, iteration: int, count: int) -> list[torch.Generator]:
        """One generator per image of this micro-batch, keyed by the image's position in the
        global batch: rank r holds positions r, r + world, ... (see ResumableSampler), micro-batch
        m of it the m-th run of ``count``. So the draws do not depend on the process count."""
        micro = self._micro[1] + 1 if self._micro[0] == iteration else 0
        self._micro = (iteration, micro)
        distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        return [step_generator(self.seed, iteration, rank + world * (micro * count + i)) for i in range(count)]

    def upsample_posteriors(self, posteriors: Tensor, size: torch.Size) -> Tensor:
        """The teacher's posteriors at label size ``size``, as from logits interpolated bilinearly
        and then normalised (mmsegmentation's ``encode_decode``, which DAFormer's teacher runs):
        each head's log-posteriors are interpolated (they differ from its logits by a per-pixel
        constant, which the softmax removes) and normalised again."""
        tiny = torch.finfo(torch.float32).tiny
        logs = F.interpolate(posteriors.float().clamp_min(tiny).log(), size=size, mode="bilinear", align_corners=False)
        return torch.cat([head.softmax(dim=1) for head in logs.split(self.num_classes, dim=1)], dim=1)

    def forward(self, batch: dict[str, Any], iteration: int = 0) -> StepOutput:
        """Losses for one (micro-)batch ``{"source": {...}, "target": {...}}``."""
        source, target = batch["source"], batch["target"]
        source_images, target_images = to_float_images(source["image"]), to_float_images(target["image"])
        source_labels = source["label"]
        predicted, score = self.teacher_predictions(target_images, source_labels.shape[-2:], iteration)
        confident = confident_pixels(score, predicted, self.settings.confidence_threshold)
        share = confident_share(confident)
        generators = self._generators(iteration, source_images.shape[0])
        mask = class_mix_masks(source_labels, self.num_classes, generators)
        mixed = self.strong(mix(mask, source_images, target_images), generators)
        mixed_labels = mix(mask, source_labels, predicted.long())
        teacher_weight = pseudo_weights(
            share, mask.shape, self.settings.pseudo_ignore_top_share, self.settings.pseudo_ignore_bottom_share
        )
        pixel_weight = torch.where(mask, 1.0, teacher_weight)

        # Two forwards, as DAFormer: a BatchNorm layer normalises each batch with its own statistics.
        source_maps = self.segmentor.encode(source_images)
        source_logits, source_features = self.segmentor.decoder(source_maps)
        mixed_logits, mixed_features = self.segmentor(mixed)
        loss_source = segmentation_loss(source_logits, source_labels, over_all_pixels=True)
        loss_mix = segmentation_loss(mixed_logits, mixed_labels, pixel_weight, over_all_pixels=True)
        loss = loss_source + self.adapt.lambda_target * loss_mix
        logs: dict[str, Tensor | float] = {
            "loss_source": loss_source.detach(),
            "loss_target": loss_mix.detach(),
            "confident_share": share,
            "mixed_share": mask.float().mean(),
        }
        if self.regularizer is not None:
            read = ~mask & confident if self.settings.drsl_target == "confident" else ~mask
            target_part = torch.where(read, predicted.long(), IGNORE_INDEX)
            pasted = torch.where(mask, source_labels, IGNORE_INDEX)
            reg_loss, reg_logs = self.regularizer(
                torch.cat([source_features, mixed_features]), torch.cat([source_labels, pasted]),
                mixed_features, target_part, step=iteration,
            )
            loss = loss + reg_loss
            logs.update({f"drsl/{k}": v for k, v in reg_logs.items()})
        loss, logs = self.add_feature_distance(loss, logs, source_maps[-1], source_images, source_labels)
        logs["loss"] = loss.detach()
        return StepOutput(loss, logs)


def run_mix(ctx: RunContext) -> None:
    """Train from the current iteration to ``train.iterations`` on mixed batches, then measure
    the teacher's pseudo-labels on the target set (``pseudo_labels/teacher/quality.json``)."""
    config, module = ctx.config, ctx.module
    assert module.teacher is not None, "the mixing host needs an EMA teacher"
    clean = dataclasses.replace(config.data.target_augment, photometric=False)
    geometric = build_train_transform(clean)  # the teacher labels clean crops
    view = SeededView(ctx.target, geometric, prepare=hide_target_labels)  # type: ignore[arg-type]
    ctx.trainer.fit(
        joint_batches(ctx, view),
        until=config.train.iterations,
        after_step=lambda _: module.teacher.update(module.student_parts()),  # type: ignore[union-attr]
        description="mix",
    )
    threshold = config.adapt.mix.confidence_threshold
    level = threshold_score(threshold) * LEVELS_PER_NAT

    def keep(predicted: Tensor, levels: Tensor) -> Tensor:
        return torch.where(levels >= level, predicted.long(), IGNORE_INDEX)  # vetoed pixels are 255

    report_teacher_quality(ctx, f"teacher confidence >= {threshold}", keep)
