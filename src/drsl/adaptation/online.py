"""The online self-training host: an EMA teacher labels each target batch (class-balanced per
batch) and is updated after every optimiser step. The teacher lives inside the training module,
so its weights and update count are saved in every checkpoint."""

from __future__ import annotations

from drsl.adaptation.context import RunContext, batches, hide_target_labels, joint_batches, source_batches
from drsl.data.transforms import build_train_transform
from drsl.engine.sampling import SeededView


def run_online(ctx: RunContext) -> None:
    """Train from the current iteration to ``train.iterations`` with teacher pseudo-labels."""
    config, module = ctx.config, ctx.module
    assert module.teacher is not None, "the online host needs an EMA teacher"
    view = SeededView(ctx.target, build_train_transform(config.data.target_augment), prepare=hide_target_labels)  # type: ignore[arg-type]
    start = ctx.trainer.iteration
    ctx.trainer.fit(
        joint_batches(
            source_batches(ctx),
            batches(view, config, config.seed + 1, start, ctx.dist),
        ),
        until=config.train.iterations,
        after_step=lambda _: module.teacher.update(module.student_parts()),  # type: ignore[union-attr]
        description="online",
    )
