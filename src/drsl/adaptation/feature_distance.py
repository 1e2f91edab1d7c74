"""ImageNet feature distance (DAFormer, Hoyer et al. 2022): keep a pretrained encoder's deepest
features of the source crops near those of a frozen copy of its ImageNet weights.

In the mixing host it guards the thing classes' ImageNet knowledge during adaptation (DAFormer);
in source-only training it is a domain-generalisation lever (synthetic-to-real generalisation
keeps ImageNet representations, as in ASG, Chen et al. 2020). The frozen copy is rebuilt from
``model.pretrained`` and kept out of the module tree, so checkpoints and DDP never see it.
It normalises as the student does: with the batch's statistics while the student trains (its
BatchNorm momentum is 0, so its ImageNet statistics never change), with its stored ones in eval
mode. Otherwise a BatchNorm encoder would start far from its own copy (a distance of about 59
for EfficientNet-Lite0 at identical weights) and the term would pull the student's batch
statistics towards ImageNet's instead of keeping its features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from drsl.adaptation.drsl.regularizer import downsample_labels
from drsl.config import Config, ConfigError
from drsl.engine.distributed import global_mean
from drsl.models.segmentor import Segmentor, build_model


class ImageNetFeatureDistance:
    """Mean L2 distance between an encoder's deepest features and its frozen ImageNet copy's, over
    the feature cells whose label is one of ``adapt.feature_distance.classes``: a cell's label is the
    value covering at least ``adapt.feature_distance.cell_min_share`` of its pixels (ignored pixels
    counting), else the cell is ignored (DAFormer's ``downscale_label_ratio``)."""

    def __init__(self, config: Config) -> None:
        settings, num_classes = config.adapt.feature_distance, int(config.model.num_classes or 0)
        if any(c >= num_classes for c in settings.classes):
            raise ConfigError(
                f"adapt.feature_distance.classes={settings.classes} holds classes >= the class set's {num_classes}"
            )
        self.weight = settings.weight
        self.num_classes = num_classes
        self.cell_min_share = settings.cell_min_share
        self.classes = torch.tensor(settings.classes, dtype=torch.long)
        self.encoder: nn.Module = build_model(config.model).encoder.requires_grad_(False).eval()
        for module in self.encoder.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0

    def __call__(self, segmentor: Segmentor, features: Tensor, images: Tensor, labels: Tensor) -> Tensor:
        """The distance for ``features`` (the student's deepest encoder map of ``images``, RGB in
        [0, 1]) on the cells of ``labels`` (label resolution) that hold one of the classes."""
        if self.classes.device != images.device:  # once: the copy follows the student's device
            self.encoder.to(images.device)
            self.classes = self.classes.to(images.device)
        if self.encoder.training != segmentor.encoder.training:
            self.encoder.train(segmentor.encoder.training)
        with torch.no_grad():
            reference = self.encoder(segmentor.normalize(images))[-1]
        distance = (features.float() - reference.float()).norm(dim=1)
        cells = downsample_labels(labels, tuple(features.shape[-2:]), self.num_classes, self.cell_min_share)
        selected = torch.isin(cells, self.classes).float()
        return global_mean((distance * selected).sum(), selected.sum())
