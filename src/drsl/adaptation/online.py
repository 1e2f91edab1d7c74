"""The online self-training host: an EMA teacher labels each target batch (class-balanced per
batch) and is updated after every optimiser step. The teacher lives inside the training module,
so its weights and update count are saved in every checkpoint. At the end, the teacher's labels
are measured on the target set (``pseudo_labels/teacher/quality.json``)."""

from __future__ import annotations

from torch import Tensor

from drsl.adaptation.context import RunContext, hide_target_labels, joint_batches
from drsl.adaptation.pseudo_label_pass import report_teacher_quality
from drsl.adaptation.pseudo_labels import select_class_balanced
from drsl.data.transforms import build_train_transform
from drsl.engine.sampling import SeededView


def run_online(ctx: RunContext) -> None:
    """Train from the current iteration to ``train.iterations`` with teacher pseudo-labels."""
    config, module = ctx.config, ctx.module
    assert module.teacher is not None, "the online host needs an EMA teacher"
    view = SeededView(ctx.target, build_train_transform(config.data.target_augment), prepare=hide_target_labels)  # type: ignore[arg-type]
    ctx.trainer.fit(
        joint_batches(ctx, view),
        until=config.train.iterations,
        after_step=lambda _: module.teacher.update(module.student_parts()),  # type: ignore[union-attr]
        description="online",
    )
    portion, num_classes = config.adapt.online_portion, config.model.num_classes

    def keep(predicted: Tensor, levels: Tensor) -> Tensor:  # the class-balanced rule, per batch
        return select_class_balanced(predicted.long(), levels.float(), num_classes, portion)

    report_teacher_quality(ctx, f"class-balanced per batch, portion {portion}", keep)
