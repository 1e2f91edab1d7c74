"""Colour maps for label-like images: blended overlays, per-mode colours, a heat colour map."""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING

import numpy as np

from drsl.data.labels import IGNORE_INDEX

if TYPE_CHECKING:
    from drsl.data.classes import ClassSet

#: Colour-map anchors, evenly spaced over [0, 1]: dark blue -> teal -> yellow (images on any
#: background), and white -> deep blue (tables on a white page).
HEAT = np.array([(13, 8, 64), (48, 62, 140), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)
BLUES = np.array([(255, 255, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107)], dtype=np.float64)


def heat_colors(values: np.ndarray, anchors: np.ndarray = HEAT) -> np.ndarray:
    """uint8 RGB (..., 3) of ``values`` in [0, 1] (clipped; NaN -> grey) on a colour map."""
    values = np.asarray(values, dtype=np.float64)
    nan = np.isnan(values)
    scaled = np.clip(np.where(nan, 0.0, values), 0.0, 1.0) * (len(anchors) - 1)
    low = np.minimum(scaled.astype(np.int64), len(anchors) - 2)
    frac = (scaled - low)[..., None]
    rgb = anchors[low] * (1 - frac) + anchors[low + 1] * frac
    rgb[nan] = (170, 170, 170)
    return np.round(rgb).astype(np.uint8)


def mode_palette(num_modes: int) -> np.ndarray:
    """``num_modes`` clearly distinct, bright RGB colours (uint8, (K, 3)); golden-ratio hues."""
    hues = (0.08 + np.arange(num_modes) * 0.618034) % 1.0
    return np.array(
        [[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.85, 0.95)] for h in hues], dtype=np.uint8
    ).reshape(num_modes, 3)


def colorize_modes(modes: np.ndarray, num_modes: int | None = None) -> np.ndarray:
    """HxWx3 uint8 colours of a mode-index map; unlabelled pixels (255) are black."""
    modes = np.asarray(modes, dtype=np.uint8)
    valid = modes != IGNORE_INDEX
    count = num_modes or (int(modes[valid].max()) + 1 if valid.any() else 1)
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:count] = mode_palette(count)
    return table[modes]


#: Pixels blended at once: float copies of a very large image would hold gigabytes.
BLEND_PIXELS = 2**20


def blend(image: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` (HxWx3 uint8) mixed with ``colors`` at opacity ``alpha``, in bands of rows."""
    out = np.empty(image.shape, dtype=np.uint8)
    rows = max(1, BLEND_PIXELS // max(1, image.shape[1]))
    for top in range(0, image.shape[0], rows):
        band = slice(top, top + rows)
        mixed = image[band].astype(np.float32) * (1 - alpha) + colors[band].astype(np.float32) * alpha
        out[band] = np.clip(np.round(mixed), 0, 255)
    return out


def label_overlay(image: np.ndarray, label: np.ndarray, classes: ClassSet, alpha: float = 0.5) -> np.ndarray:
    """The image blended with the class colours of ``label``; ignored pixels stay as they are."""
    mixed = blend(image, classes.colorize(label), alpha)
    return np.where((np.asarray(label) == IGNORE_INDEX)[..., None], image, mixed)


def confidence_to_uint8(confidence: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as uint8 0..255 (rounded)."""
    return np.round(np.clip(np.asarray(confidence, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
