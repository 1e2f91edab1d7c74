"""One pseudo-labelling pass over a target set: model -> (fused) posteriors -> class-balanced
PNG labels and a manifest, resumable, sharded across ranks; plus quality against held-back truth."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from drsl.adaptation.posterior import fused_probabilities
from drsl.adaptation.pseudo_labels import PseudoLabelQuality, PseudoLabelWriter
from drsl.config import Config
from drsl.data.base import SegmentationDataset
from drsl.data.io import read_label
from drsl.engine.distributed import DistInfo, barrier
from drsl.engine.logging import progress as progress_bar
from drsl.evaluation.inference import predict_probs
from drsl.fileio import atomic_write_json

LABEL_DIR = "labels"


def pseudo_label_path(out_dir: str | Path, name: str) -> Path:
    """Where the pseudo-label PNG of sample ``name`` lives."""
    return Path(out_dir) / LABEL_DIR / f"{name}.png"


@torch.no_grad()
def generate_pseudo_labels(
    module: torch.nn.Module,
    dataset: SegmentationDataset,
    out_dir: str | Path,
    config: Config,
    dist: DistInfo,
    portion: float,
    round_index: int,
    fusion: str,
    checkpoint: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Write class-balanced pseudo-labels of ``dataset`` (of its class set) to ``out_dir``;
    returns the manifest.

    ``module`` has ``segmentor`` and ``regularizer`` (None without DRSL). Images already stored
    by a killed pass are re-read, not recomputed; the result is byte-identical either way.
    """
    settings = config.adapt.pseudo_label
    writer = PseudoLabelWriter.from_config(
        out_dir, settings, dataset.classes.num_classes, round_index, checkpoint,
        extra={"portion_schedule": dataclasses.asdict(settings), "target_root": str(dataset.root)},
        class_names=dataset.classes.names, overwrite=False,
    )
    writer.fusion = fusion
    eval_cfg = dataclasses.replace(config.eval, flip=settings.flip, scales=list(settings.scales))
    was_training = module.training
    module.eval()

    def prob_fn(images: Tensor) -> Tensor:
        return fused_probabilities(module.segmentor, module.regularizer, images, fusion)

    indices = range(dist.rank, len(dataset), dist.world_size)
    for index in progress_bar(indices, enabled=progress and dist.is_main, desc=f"pseudo-labels r{round_index}"):
        name = dataset.samples[index].name
        if writer.done(name):
            writer.add_existing(name)
            continue
        sample = dataset[index]
        images = sample["image"].unsqueeze(0).to(dist.device).float().div_(255.0)
        probs = predict_probs(prob_fn, images, eval_cfg, out_size=sample["label"].shape[-2:])[0]
        writer.add(name, probs.cpu(), valid_mask=probs.amax(0).cpu() > 0)
    manifest = writer.finalize(portion)
    module.train(was_training)
    barrier()
    return manifest


def measure_quality(dataset: SegmentationDataset, out_dir: str | Path, num_classes: int) -> dict[str, Any] | None:
    """Precision and coverage of stored pseudo-labels against the dataset's held-back labels.

    Returns None when the dataset has no labels. Written to ``out_dir/quality.json``.
    """
    if not any(sample.label_path is not None for sample in dataset.samples):
        return None
    quality = PseudoLabelQuality(num_classes)
    for index, sample in enumerate(dataset.samples):
        truth = dataset[index]["label"].numpy()
        quality.update(read_label(pseudo_label_path(out_dir, sample.name)), truth)
    result = quality.result()
    atomic_write_json(Path(out_dir) / "quality.json", result)
    return result

