"""The Python API: load a checkpoint and segment images, evaluate, pseudo-label, export.

>>> from drsl.api import load_model                       # doctest: +SKIP
>>> labels = load_model("runs/x/checkpoints/latest.pt").segment(image)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from drsl.config import Config, ConfigError, apply_overrides, config_from_dict, load_config
from drsl.data.classes import ClassSet, bind_class_set, checkpoint_class_set
from drsl.data.io import as_rgb
from drsl.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from drsl.engine.distributed import DistInfo, init_distributed, wants_cuda
from drsl.evaluation.inference import in_tiles, predict_labels, predict_probs

#: Images over this many pixels are segmented in tiles (memory stays bounded: ``drsl predict`` on an
#: 8000 x 8000 photo), each seen with ``TILE_MARGIN`` pixels of context on every side.
TILE_PIXELS = 2048 * 2048
TILE_MARGIN = 128


def _config_for(state: dict[str, Any], path: str | Path, config: str | Path | None, overrides: list[str]) -> Config:
    if config is not None:
        from drsl.configs import resolve_config_path

        return load_config(resolve_config_path(str(config)), overrides)
    if "config" not in state:
        raise CheckpointError(f"{path} stores no config: pass --config")
    try:
        stored = config_from_dict(state["config"])
    except ConfigError as exc:
        raise ConfigError(f"{path} stores a config this drsl version does not accept ({exc}): pass --config "
                          "with a current config of the same network") from None
    return apply_overrides(stored, overrides)


class SegmentationModel:
    """A trained segmentor (and its DRSL regulariser, if any) ready for inference; ``classes``
    names and colours what it predicts."""

    def __init__(self, module: torch.nn.Module, config: Config, classes: ClassSet, device: torch.device) -> None:
        self.module = module.to(device).eval()
        self.config = config
        self.classes = classes
        self.device = device

    @property
    def has_modes(self) -> bool:
        """True for DRSL models, which can report each pixel's mode."""
        return self.module.regularizer is not None

    def _batch(self, image: np.ndarray | Image.Image | Tensor) -> Tensor:
        """A (B, 3, H, W) batch (uint8 or float, on the CPU) of an image, image batch or tensor."""
        if isinstance(image, Image.Image):
            image = as_rgb(image, "the given PIL image")
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
            image = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        return image.unsqueeze(0) if image.dim() == 3 else image

    def _tensor(self, image: np.ndarray | Image.Image | Tensor) -> Tensor:
        batch = self._batch(image).to(self.device)
        return batch.float().div(255.0) if batch.dtype == torch.uint8 else batch.float()

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray | Image.Image | Tensor, eval_cfg: Any = None) -> Tensor:
        """Class probabilities (B, C, H, W) at the input size, with the config's inference options.

        Memory grows with C x H x W: for large images use :meth:`predict`, which works in tiles.
        """
        images = self._tensor(image)
        return predict_probs(self._softmax, images, eval_cfg or self.config.eval, out_size=images.shape[-2:])

    def _softmax(self, images: Tensor) -> Tensor:
        return torch.softmax(self.module.segmentor(images).logits.float(), dim=1)

    @torch.inference_mode()
    def predict(self, image: np.ndarray | Image.Image | Tensor, max_pixels: int = TILE_PIXELS) -> tuple[Tensor, Tensor]:
        """(confidence, labels), each (B, H, W): max and argmax (uint8) of :meth:`probabilities`
        (up to float rounding), never holding all class probabilities at full resolution.

        Images over ``max_pixels`` pixels are processed in tiles (:func:`in_tiles`, with
        ``TILE_MARGIN`` pixels of context), so memory stays bounded whatever the image size.
        """
        def labelled(tile: Tensor) -> Tensor:
            confidence, labels = predict_labels(self._softmax, self._tensor(tile), self.config.eval)
            return torch.stack([confidence, labels.float()], 1)

        out = in_tiles(labelled, self._batch(image), max_pixels=max_pixels, margin=TILE_MARGIN)
        return out[:, 0].clone(), out[:, 1].to(torch.uint8)

    def segment(self, image: np.ndarray | Image.Image | Tensor) -> np.ndarray:
        """Train-id label map (H, W) uint8 of one HxWx3 uint8 RGB image (numpy or PIL)."""
        return self.predict(image)[1][0].cpu().numpy()

    @torch.inference_mode()
    def mode_map(
        self, image: np.ndarray | Image.Image | Tensor, labels: np.ndarray, max_pixels: int = TILE_PIXELS
    ) -> np.ndarray:
        """Each pixel's mode (H, W) under the given labels; 255 where unlabelled (DRSL models only).

        Large images are processed in tiles, like :meth:`predict`.
        """
        if not self.has_modes:
            raise ValueError("this checkpoint has no MMDL head (not a DRSL model)")

        def modes_of(tile: Tensor, tile_labels: Tensor) -> Tensor:
            images = self._tensor(tile)
            features = self.module.segmentor(images).features
            small = F.interpolate(tile_labels.to(self.device).float(), size=features.shape[-2:], mode="nearest")
            modes = self.module.regularizer.mode_map(features, small[:, 0].long()).float()
            return F.interpolate(modes[:, None], size=images.shape[-2:], mode="nearest")

        label_batch = torch.as_tensor(labels)[None, None]
        modes = in_tiles(modes_of, self._batch(image), label_batch, max_pixels=max_pixels, margin=TILE_MARGIN)
        return modes[0, 0].to(torch.uint8).cpu().numpy()


def load_model(
    checkpoint: str | Path,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    device: str = "auto",
) -> SegmentationModel:
    """Load a training checkpoint or export for inference (weights only, never unpickled)."""
    from drsl.training import build_module

    state = load_checkpoint(checkpoint)
    cfg = _config_for(state, checkpoint, config, overrides or [])
    classes = bind_class_set(cfg, checkpoint_class_set(state, checkpoint, cfg))
    cfg.init_checkpoint = None
    cfg.model.pretrained = None
    module = build_module(dataclasses.replace(cfg, adapt=dataclasses.replace(cfg.adapt, host="rounds")))
    weights = {k: v for k, v in state["model"].items() if not k.startswith("teacher.")}
    from drsl.models.weights import load_matching

    load_matching(module, weights, str(checkpoint))
    return SegmentationModel(module, cfg, classes, torch.device("cuda" if wants_cuda(device) else "cpu"))


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write a slim inference checkpoint: weights (no teacher, no optimizer), config, class set."""
    state = load_checkpoint(checkpoint)
    slim = {
        "model": {k: v for k, v in state["model"].items() if not k.startswith("teacher.")},
        "config": state.get("config", {}),
        "iteration": state.get("iteration", 0),
        **({"classes": state["classes"]} if state.get("classes") else {}),
    }
    save_checkpoint(out, slim)
    return Path(out)


def evaluate_checkpoint(
    checkpoint: str | Path, config: str | Path | None = None, overrides: list[str] | None = None,
    device: str = "auto", head: str = "segmentation",
) -> dict[str, Any]:
    """mIoU of a checkpoint on its config's val set, for each evaluation subset (e.g. 19/16/13).

    ``head``: the segmentation head, or a DRSL model's MMDL head (its class posterior) or the
    product of both (:data:`drsl.adaptation.posterior.HEADS`).
    """
    from drsl.adaptation.posterior import HEADS, head_probabilities
    from drsl.data.registry import build_dataset
    from drsl.evaluation.evaluate import config_prob_fn, evaluate

    if head not in HEADS:
        raise ConfigError(f"head must be one of {HEADS}, got {head!r}")
    model = load_model(checkpoint, config, overrides, device)
    if head != "segmentation" and not model.has_modes:
        raise CheckpointError(f"{checkpoint} has no MMDL head (not a DRSL model): the {head!r} head needs one")
    dist = init_distributed(device)
    if model.config.data.val is None:
        raise CheckpointError(f"the config of {checkpoint} has no data.val: pass --config or data.val=...")
    segmentor, regularizer = model.module.segmentor, model.module.regularizer
    other = None if head == "segmentation" else partial(head_probabilities, segmentor, regularizer, head=head)
    summary, matrix = evaluate(
        config_prob_fn(segmentor, model.config, model.device, other),
        build_dataset(model.config.data.val, model.classes), model.config.eval,
        dataclasses.replace(dist, device=model.device), model.classes,
        model.config.data.eval_subsets, model.config.data.num_workers, progress=True,
    )
    summary["confusion_matrix"] = matrix.tolist()
    summary["head"] = head
    return summary


def pseudo_label_checkpoint(
    checkpoint: str | Path, out: str | Path, portion: float, round_index: int = 0,
    fusion: str | None = None, config: str | Path | None = None,
    overrides: list[str] | None = None, device: str = "auto",
) -> dict[str, Any]:
    """Class-balanced pseudo-labels of a checkpoint's target set, written to ``out``."""
    from drsl.adaptation.pseudo_label_pass import generate_pseudo_labels
    from drsl.data.registry import build_dataset
    from drsl.engine.outputs import check_output

    model = load_model(checkpoint, config, overrides, device)
    cfg = model.config
    target_root = cfg.data.target.root if cfg.data.target is not None else None
    check_output(out, [("the checkpoint", checkpoint), ("data.target.root", target_root)], folder=True)
    if cfg.data.target is None:
        raise CheckpointError(f"the config of {checkpoint} has no data.target: pass --config")
    fusion = fusion or ("agree" if model.has_modes else "none")
    dist: DistInfo = dataclasses.replace(init_distributed(device), device=model.device)
    return generate_pseudo_labels(
        model.module, build_dataset(cfg.data.target, model.classes, require_labels=False), out, cfg, dist,
        portion, round_index, fusion, checkpoint=str(checkpoint),
    )

