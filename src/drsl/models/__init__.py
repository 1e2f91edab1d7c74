"""Segmentation networks: an encoder and a decode head from two registries, joined by the Segmentor.

The contracts (see :mod:`drsl.models.interfaces`):

- **Encoder** (``nn.Module``): ``forward(x) -> list[Tensor]``, feature maps ordered shallow to deep;
  attributes ``out_channels: list[int]`` and ``strides: list[int]`` (one per map) and
  ``input_norm: InputNorm``, the normalisation its weights were trained with (RGB/BGR, value scale,
  mean, std). The Segmentor applies it to its float RGB input in [0, 1]; encoders never normalise.
- **Decode head** (``nn.Module``): ``forward(features) -> (logits, fused_features)``; attribute
  ``feature_channels: int``, the channels of ``fused_features``. The DRSL MMDL head reads
  ``fused_features`` (``SegmentorOutput.features``); logits may be at any stride (losses and
  inference upsample them to label size).

The names live in :mod:`drsl.models.registry` (``BACKBONES``, ``DECODERS``: drsl's own, ``timm/NAME``,
and those user code and plug-ins register, see :mod:`drsl.plugins`); the config keys
``model.backbone`` and ``model.decoder`` pick one of each.
"""
