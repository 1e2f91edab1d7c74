"""The Python API: load a checkpoint and segment images, evaluate, pseudo-label, export.

>>> from drsl.api import load_model                       # doctest: +SKIP
>>> labels = load_model("runs/x/checkpoints/latest.pt").segment("street.png")   # doctest: +SKIP

Images come as paths, PIL images, numpy arrays, tensors or lists of them (:mod:`drsl.image_inputs`);
one image gives one result, several a list (docs/python_api.md).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from drsl.config import Config, ConfigError, apply_overrides, config_from_dict, load_config
from drsl.data.classes import ClassSet, bind_class_set, checkpoint_class_set
from drsl.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from drsl.engine.distributed import DistInfo, init_distributed, wants_cuda
from drsl.errors import ImageInputError
from drsl.evaluation.inference import in_tiles, predict_labels, predict_probs
from drsl.image_inputs import ImageLike, Images, as_one, as_rgb_array, image_batches, is_several
from drsl.viz.overlay import label_overlay

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


class Segmentation(NamedTuple):
    """What :meth:`SegmentationModel.predict` returns for one image, both (H, W) at its size."""

    #: Class ids (uint8) of the model's class set.
    labels: np.ndarray
    #: The probability of the predicted class (float32, in [0, 1]).
    confidence: np.ndarray


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

    def _tensor(self, batch: Tensor) -> Tensor:
        """A (N, 3, H, W) batch from :func:`image_batches` as float in [0, 1] on the model's device."""
        batch = batch.to(self.device)
        return batch.float().div(255.0) if batch.dtype == torch.uint8 else batch.float()

    @torch.inference_mode()
    def probabilities(self, images: Images, eval_cfg: Any = None) -> Tensor:
        """Class probabilities (N, C, H, W), float32, at the input size, with the config's inference
        options; ``images``: one image or several of one size (:mod:`drsl.image_inputs`).

        Memory grows with C x H x W: for large images use :meth:`predict`, which works in tiles.
        """
        batches = [self._tensor(batch) for batch in image_batches(images, batch_size=2**31)]
        if len({batch.shape[-2:] for batch in batches}) > 1:
            raise ImageInputError("probabilities of images of different sizes: call it once per size")
        batch = torch.cat(batches)
        return predict_probs(self._softmax, batch, eval_cfg or self.config.eval, out_size=batch.shape[-2:])

    def _softmax(self, images: Tensor) -> Tensor:
        return torch.softmax(self.module.segmentor(images).logits.float(), dim=1)

    @torch.inference_mode()
    def predict(self, images: Images, max_pixels: int = TILE_PIXELS) -> Segmentation | list[Segmentation]:
        """The :class:`Segmentation` (labels and confidence, numpy, at the input size) of one image,
        or a list of them for several (a list, or an Nx3xHxW tensor; :mod:`drsl.image_inputs`).

        Labels and confidence are the argmax and max of :meth:`probabilities` (up to float
        rounding), never holding all class probabilities at full resolution: images over
        ``max_pixels`` pixels are processed in tiles (:func:`in_tiles`, with ``TILE_MARGIN`` pixels
        of context), so memory stays bounded whatever the image size. Images of one size are
        batched ``eval.batch_size`` at a time.
        """
        def labelled(tile: Tensor) -> Tensor:
            confidence, labels = predict_labels(self._softmax, self._tensor(tile), self.config.eval)
            return torch.stack([confidence, labels.float()], 1)

        results = []
        for batch in image_batches(images, self.config.eval.batch_size):
            out = in_tiles(labelled, batch, max_pixels=max_pixels, margin=TILE_MARGIN).cpu()
            results += [Segmentation(row[1].to(torch.uint8).numpy(), row[0].numpy()) for row in out]
        return results if is_several(images) else results[0]

    def segment(self, images: Images) -> np.ndarray | list[np.ndarray]:
        """The label map (H, W) uint8 of one image: class ids of :attr:`classes` (255 never occurs);
        a list of them for several images (a list, or an Nx3xHxW tensor; :mod:`drsl.image_inputs`)."""
        predicted = self.predict(images)
        return [p.labels for p in predicted] if isinstance(predicted, list) else predicted.labels

    def overlay(self, image: ImageLike, labels: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
        """``image`` blended with the class colours of ``labels`` (default: :meth:`segment` of it) at
        opacity ``alpha``, as an HxWx3 uint8 RGB array (``PIL.Image.fromarray`` saves it)."""
        rgb = as_rgb_array(image)
        labels = self.segment(rgb) if labels is None else np.asarray(labels)
        if labels.shape != rgb.shape[:2]:
            height, width = rgb.shape[:2]
            raise ImageInputError(f"labels of shape {labels.shape} do not fit an image of {height}x{width}")
        return label_overlay(rgb, labels, self.classes, alpha)

    @torch.inference_mode()
    def mode_map(self, image: ImageLike, labels: np.ndarray, max_pixels: int = TILE_PIXELS) -> np.ndarray:
        """Each pixel's mode (H, W) uint8 under the given labels; 255 where unlabelled (DRSL models
        only). ``image``: one image in any form :mod:`drsl.image_inputs` takes.

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
        modes = in_tiles(modes_of, as_one(image), label_batch, max_pixels=max_pixels, margin=TILE_MARGIN)
        return modes[0, 0].to(torch.uint8).cpu().numpy()


def _student_weights(state: dict[str, Any]) -> dict[str, Tensor]:
    """A checkpoint's model weights without the EMA teacher's (inference uses the student)."""
    return {k: v for k, v in state["model"].items() if not k.startswith("teacher.")}


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
    from drsl.models.weights import load_matching

    load_matching(module, _student_weights(state), str(checkpoint))
    return SegmentationModel(module, cfg, classes, torch.device("cuda" if wants_cuda(device) else "cpu"))


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write a slim inference checkpoint: weights (no teacher, no optimizer), config, class set."""
    state = load_checkpoint(checkpoint)
    slim = {
        "model": _student_weights(state),
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
    dist = init_distributed(device, model.config.dist)
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
    """Class-balanced pseudo-labels of a checkpoint's target set, written to ``out``; returns their
    manifest (its ``fusion``: the one used).

    ``fusion``: how a DRSL model's MMDL head joins the selection; None: the run's own
    ``adapt.pseudo_label.fusion`` (``none`` for models without the head).
    """
    from drsl.adaptation.pseudo_label_pass import generate_pseudo_labels
    from drsl.data.registry import build_dataset
    from drsl.engine.outputs import check_data_output, check_output

    model = load_model(checkpoint, config, overrides, device)
    cfg = model.config
    check_output(out, [("the checkpoint", checkpoint)], folder=True)
    check_data_output(out, cfg, folder=True)
    if cfg.data.target is None:
        raise CheckpointError(f"the config of {checkpoint} has no data.target: pass --config")
    fusion = fusion or (cfg.adapt.pseudo_label.fusion if model.has_modes else "none")
    dist: DistInfo = dataclasses.replace(init_distributed(device, cfg.dist), device=model.device)
    return generate_pseudo_labels(
        model.module, build_dataset(cfg.data.target, model.classes, require_labels=False), out, cfg, dist,
        portion, round_index, fusion, checkpoint=str(checkpoint),
    )

