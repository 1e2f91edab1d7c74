"""One pseudo-labelling pass over a target set: batches of same-size images through the model on
its device, test-time averaging and fusion at label resolution in bounded row bands, then uint8
predicted and runner-up classes and their uint16 confidence levels to the host and on to PNG
writers; class-balanced thresholds come from histograms, so every image goes through the model and
is written once; the kept counts and quality are counted on the stored maps once the thresholds
are known.

Resumable and sharded across ranks (see :mod:`drsl.adaptation.pseudo_labels.writer`); the set is
fingerprinted by the weights and settings that make it, and a set with another fingerprint is never
reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from drsl.adaptation.context import RunContext
from drsl.adaptation.posterior import fuse, head_posteriors, runner_up, uses_mmdl
from drsl.adaptation.pseudo_labels import PseudoLabelQuality, PseudoLabelWriter, complete_set, quantize
from drsl.adaptation.pseudo_labels.writer import FORMAT, QUALITY
from drsl.config import Config, EvalConfig
from drsl.data.base import SegmentationDataset
from drsl.data.digest import data_digest, images_digest
from drsl.engine.distributed import DistInfo, barrier
from drsl.engine.logging import progress as progress_bar
from drsl.engine.trainer import AMP_DTYPES, autocast, conv_settings
from drsl.evaluation.evaluate import collate_same_size
from drsl.evaluation.inference import average_rows, pass_maps, row_bands
from drsl.fileio import atomic_write_json

#: Upper bound on the float32 buffers of one row band (averaged posteriors and their fusion).
BAND_BYTES = 128 * 2**20


def weights_digest(parts: Sequence[nn.Module]) -> str:
    """SHA-256 of the parameters and buffers of ``parts`` (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for index, part in enumerate(parts):
        for key, tensor in sorted(part.state_dict().items()):
            if isinstance(tensor, Tensor):
                digest.update(f"{index}.{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                flat = tensor.detach().cpu().contiguous().reshape(-1)
                digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pass_fingerprint(
    parts: Sequence[nn.Module], dataset: SegmentationDataset, eval_cfg: EvalConfig, fusion: str,
    num_classes: int, amp: str,
) -> str:
    """What a set of maps depends on: the weights, the images (names and contents: see
    :mod:`drsl.data.digest`), inference settings and fusion."""
    settings = {
        "format": FORMAT, "weights": weights_digest(parts), "fusion": fusion,
        "num_classes": num_classes, "amp": amp, "inference": dataclasses.asdict(eval_cfg),
        "target": {"root": str(dataset.root), "images": images_digest(dataset.samples),
                   "resize": getattr(dataset, "resize", None)},
    }
    return data_digest(settings)


class LabelMaps(NamedTuple):
    """One batch's maps at label size, each (B, H, W) on the images' device: the predicted class
    (uint8, 255 = vetoed), its confidence levels (int32), and the runner-up class (uint8) with its
    levels, which CRST's selection weighs too (see :mod:`drsl.adaptation.pseudo_labels.writer`)."""

    pred: Tensor
    levels: Tensor
    second: Tensor
    second_levels: Tensor


@torch.no_grad()
def label_batch(
    segmentor: nn.Module, regularizer: nn.Module | None, images: Tensor, out_size: Sequence[int],
    eval_cfg: EvalConfig, fusion: str, num_classes: int, amp: torch.dtype | None = None,
) -> LabelMaps:
    """The maps of ``images`` at ``out_size``, fused after test-time averaging, band by band."""

    def prob_fn(x: Tensor) -> Tensor:
        with autocast(x.device, amp):
            return head_posteriors(segmentor, regularizer, x, fusion)  # type: ignore[arg-type]

    maps = pass_maps(prob_fn, images, eval_cfg)
    height, width = int(out_size[0]), int(out_size[1])
    shape = (images.shape[0], height, width)
    out = LabelMaps(*(
        torch.empty(shape, dtype=dtype, device=images.device)
        for dtype in (torch.uint8, torch.int32, torch.uint8, torch.int32)
    ))
    bytes_per_row = 4 * 4 * images.shape[0] * maps[0].shape[1] * width  # band, fusion, runner-up, temporaries
    for rows in row_bands(height, bytes_per_row, BAND_BYTES):
        band = average_rows(maps, out_size, rows)
        band_second, band_second_score = runner_up(band, num_classes, fusion)
        band_pred, band_score = fuse(band, num_classes, fusion, inplace=True)
        out.pred[:, rows] = band_pred.to(torch.uint8)
        out.levels[:, rows] = quantize(band_score)
        out.second[:, rows] = band_second.to(torch.uint8)
        out.second_levels[:, rows] = quantize(band_second_score)
    return out


def image_batches(
    dataset: SegmentationDataset, indices: Sequence[int], config: Config, device: torch.device,
) -> Iterator[tuple[dict[str, Any], Tensor]]:
    """``(batch, images)`` for the samples of ``indices`` in order: batches of up to
    ``eval.batch_size`` same-size samples decoded by ``data.num_workers`` loader workers (see
    :func:`collate_same_size`; labels uint8), images float [0, 1] on ``device`` in the memory layout
    of ``train.channels_last``."""
    loader = DataLoader(
        Subset(dataset, list(indices)), batch_size=config.eval.batch_size, num_workers=config.data.num_workers,
        collate_fn=collate_same_size, pin_memory=device.type == "cuda",
    )
    channels_last = conv_settings(config.train, device)[0]
    for groups in loader:
        for batch in groups:
            images = batch["image"].to(device, non_blocking=True).float().div_(255.0)
            yield batch, images.contiguous(memory_format=torch.channels_last) if channels_last else images


def inference_amp(config: Config) -> torch.dtype | None:
    """The autocast dtype of inference: ``eval.amp`` ("train": as ``train.amp``)."""
    return AMP_DTYPES.get(config.train.amp if config.eval.amp == "train" else config.eval.amp)


@torch.no_grad()
def generate_pseudo_labels(
    module: nn.Module,
    dataset: SegmentationDataset,
    out_dir: str | Path,
    config: Config,
    dist: DistInfo,
    portion: float,
    round_index: int,
    fusion: str,
    checkpoint: str,
    progress: bool = True,
    replace: bool = False,
) -> dict[str, Any]:
    """Write class-balanced pseudo-labels of ``dataset`` (of its class set) to ``out_dir``;
    returns the manifest.

    ``module`` has ``segmentor`` and ``regularizer`` (None without DRSL). A complete set with the
    same fingerprint and portion is returned as it is; maps of the same fingerprint left by a
    killed pass are re-read, not recomputed; maps of another fingerprint are deleted when
    ``replace`` (a run's own folder), else a FileExistsError. ``quality.json`` is written when the
    dataset has held-back labels.
    """
    settings = config.adapt.pseudo_label
    eval_cfg = dataclasses.replace(config.eval, flip=settings.flip, scales=list(settings.scales))
    regularizer = module.regularizer if uses_mmdl(fusion, module.regularizer) else None
    parts = [module.segmentor] + ([regularizer] if regularizer is not None else [])
    num_classes = dataset.classes.num_classes
    amp = inference_amp(config)
    fingerprint = pass_fingerprint(parts, dataset, eval_cfg, fusion, num_classes, str(amp))
    manifest = complete_set(out_dir, fingerprint, portion)
    if manifest is not None:
        return manifest
    info = {"round": round_index, "checkpoint": checkpoint, "fusion": fusion,
            "target_root": str(dataset.root), "portion_schedule": dataclasses.asdict(settings)}
    make = lambda clear: PseudoLabelWriter(  # noqa: E731
        out_dir, num_classes, fingerprint, info, class_names=dataset.classes.names, device=dist.device, replace=clear,
    )
    barrier()  # every rank has looked for a complete set before rank 0 may clear the folder
    writer = make(replace) if dist.is_main else None
    barrier()
    writer = writer or make(False)
    has_truth = any(sample.label_path is not None for sample in dataset.samples)
    todo = []
    for index in range(dist.rank, len(dataset), dist.world_size):
        name = dataset.samples[index].name
        if not (writer.done(name) and writer.add_existing(name)):
            todo.append(index)
    was_training = module.training
    module.eval()
    bar = progress_bar(total=len(todo), enabled=progress and dist.is_main, desc=f"pseudo-labels r{round_index}")
    for batch, images in image_batches(dataset, todo, config, dist.device):
        out_size = batch["label"].shape[-2:]
        writer.add(batch["name"], *label_batch(module.segmentor, regularizer, images, out_size, eval_cfg, fusion, num_classes, amp))
        bar.update(len(batch["name"]))
    bar.close()
    index_of = {sample.name: index for index, sample in enumerate(dataset.samples)}
    manifest = writer.finalize(portion, (lambda name: dataset[index_of[name]]["label"]) if has_truth else None)
    module.train(was_training)
    return manifest


@torch.no_grad()
def teacher_quality(
    segmentor: nn.Module, regularizer: nn.Module | None, dataset: SegmentationDataset, config: Config,
    dist: DistInfo, fusion: str, keep: Callable[[Tensor, Tensor], Tensor],
) -> dict[str, Any] | None:
    """Precision and coverage on a labelled target set of the pseudo-labels a teacher host would
    make: ``keep(predicted, levels)`` (batches of uint8 classes, 255 = vetoed, and int32 levels)
    returns the kept labels (255 elsewhere). Sharded over ranks; None when the set has no labels."""
    if not any(sample.label_path is not None for sample in dataset.samples):
        return None
    settings = config.adapt.pseudo_label
    eval_cfg = dataclasses.replace(config.eval, flip=settings.flip, scales=list(settings.scales))
    regularizer = regularizer if uses_mmdl(fusion, regularizer) else None
    num_classes = dataset.classes.num_classes
    quality = PseudoLabelQuality(num_classes)
    indices = range(dist.rank, len(dataset), dist.world_size)
    for batch, images in image_batches(dataset, indices, config, dist.device):
        truth = batch["label"]
        predicted, levels, _, _ = label_batch(
            segmentor, regularizer, images, truth.shape[-2:], eval_cfg, fusion, num_classes, inference_amp(config)
        )
        quality.update(keep(predicted, levels).cpu().numpy(), truth.numpy())
    quality.all_reduce()
    return quality.result()


def report_teacher_quality(ctx: RunContext, rule: str, keep: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Measure the EMA teacher's pseudo-labels on the target set at the end of a teacher host's
    run (:func:`teacher_quality`): logged, and written to ``pseudo_labels/teacher/quality.json``."""
    module = ctx.module
    segmentor, regularizer = module.teacher_parts()
    fusion = module.fusion_at(ctx.trainer.iteration)
    result = teacher_quality(segmentor, regularizer, ctx.target, ctx.config, ctx.dist, fusion, keep)  # type: ignore[arg-type]
    if result is None or not ctx.dist.is_main:
        return
    result.update(rule=rule, fusion=fusion, iteration=ctx.trainer.iteration)
    atomic_write_json(ctx.work_dir / "pseudo_labels" / "teacher" / QUALITY, result)
    ctx.logger.scalars(
        ctx.trainer.iteration, {"precision": result["precision"], "truth_coverage": result["coverage"]},
        prefix="pseudo_labels/teacher/",
    )
