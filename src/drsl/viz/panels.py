"""The training panels logged to TensorBoard during a run.

A panel shows what the model does on one fixed source and one fixed target sample:
source image | label | prediction, and target image | pseudo-label | confidence (| modes for DRSL).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drsl.data.classes import ClassSet
from drsl.data.labels import IGNORE_INDEX
from drsl.engine.logging import RunLogger
from drsl.viz.grid import Tile, labelled_grid
from drsl.viz.overlay import colorize_modes, heat_colors

def make_panel(
    source_image: np.ndarray,
    source_label: np.ndarray,
    source_pred: np.ndarray,
    target_image: np.ndarray,
    target_pseudo_label: np.ndarray,
    target_confidence: np.ndarray,
    classes: ClassSet,
    target_mode_map: np.ndarray | None = None,
) -> np.ndarray:
    """An HxWx3 uint8 labelled grid: source image | label | prediction over target image |
    pseudo-label | confidence (| mode map). Images are HxWx3 uint8, labels HxW class ids of
    ``classes`` (255 = ignore, black), confidence HxW in [0, 1], the mode map HxW mode ids (255 =
    unlabelled)."""
    colorize = classes.colorize
    rows = [
        [Tile("source image", source_image, True), Tile("source label", colorize(source_label)),
         Tile("source prediction", colorize(source_pred))],
        [Tile("target image", target_image, True), Tile("target pseudo-label", colorize(target_pseudo_label)),
         Tile("target confidence", heat_colors(target_confidence))],
    ]
    if target_mode_map is not None:
        rows[1].append(Tile("target modes", colorize_modes(target_mode_map)))
    return labelled_grid(rows)


def _image_array(image: Tensor) -> np.ndarray:
    """A 3xHxW uint8 (or [0, 1] float) tensor as an HxWx3 uint8 array."""
    if image.dtype != torch.uint8:
        image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return image.permute(1, 2, 0).cpu().numpy()


class PanelWriter:
    """Logs a training panel every ``every`` iterations (0 disables it) through ``logger.image``.

    Call :meth:`maybe_log` after each step with the training module and two fixed samples (dataset
    items: ``image`` 3xHxW uint8, ``label`` HxW). The target sample's label is shown as its
    pseudo-label when it has any labelled pixel; otherwise the prediction stands in. The forward
    passes run in eval mode under no_grad and draw no random numbers, so training is unaffected.
    """

    def __init__(self, logger: RunLogger, every: int, classes: ClassSet, tag: str = "panels/train") -> None:
        self.logger = logger
        self.every = every
        self.classes = classes
        self.tag = tag

    def maybe_log(
        self, iteration: int, module: nn.Module, source_sample: dict[str, Any], target_sample: dict[str, Any]
    ) -> bool:
        """Log the panel if ``iteration`` is a multiple of ``every``; True when one was logged."""
        if self.every <= 0 or iteration % self.every or not self.logger.enabled:
            return False
        self.logger.image(iteration, self.tag, self.render(module, source_sample, target_sample))
        return True

    __call__ = maybe_log

    def render(self, module: nn.Module, source_sample: dict[str, Any], target_sample: dict[str, Any]) -> np.ndarray:
        """The panel of ``module`` (with ``segmentor`` and optional ``regularizer``) on the samples."""
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                source_pred, _, _ = _predict(module.segmentor, source_sample["image"])
                target_pred, confidence, features = _predict(module.segmentor, target_sample["image"])
                target_label = target_sample["label"]
                pseudo = target_label if bool((target_label != IGNORE_INDEX).any()) else target_pred
                modes = None
                regularizer = getattr(module, "regularizer", None)
                if regularizer is not None:
                    modes = _mode_map(regularizer, features, pseudo.to(features.device))
        finally:
            module.train(was_training)
        return make_panel(
            _image_array(source_sample["image"]), source_sample["label"].cpu().numpy(), source_pred.cpu().numpy(),
            _image_array(target_sample["image"]), pseudo.cpu().numpy(), confidence.cpu().numpy(),
            self.classes, None if modes is None else modes.cpu().numpy(),
        )


def _predict(segmentor: nn.Module, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(argmax labels HxW, max probability HxW, encoder features 1xFxhxw) of one 3xHxW image."""
    device = next(segmentor.parameters()).device
    batch = image.unsqueeze(0).to(device)
    batch = batch.float().div(255.0) if batch.dtype == torch.uint8 else batch.float()
    output = segmentor(batch)
    logits = F.interpolate(output.logits.float(), size=batch.shape[-2:], mode="bilinear", align_corners=False)
    confidence, labels = logits.softmax(1)[0].max(0)
    return labels, confidence, output.features


def _mode_map(regularizer: nn.Module, features: Tensor, labels: Tensor) -> Tensor:
    """Mode ids (HxW, 255 unlabelled) under ``labels`` (HxW), at label resolution."""
    modes = regularizer.mode_map(features, labels.long()[None])
    return F.interpolate(modes[:, None].float(), size=labels.shape[-2:], mode="nearest")[0, 0].to(torch.uint8)
