"""Photo textures cut from the real photographs that scikit-image ships inside its package.

The files are read straight from the installed ``skimage/data`` folder (never through
``skimage.data`` functions, some of which download). Each photo becomes a zero-mean, unit-std
grey texture with a small image pyramid, sampled with wrap-around and a mip level chosen from
the pixel footprint, so distant surfaces look smooth rather than aliased.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

PHOTO_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "chessboard": "chessboard_GRAY.png",
    "coffee": "coffee.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "ihc": "ihc.png",
    "moon": "moon.png",
    "motorcycle": "motorcycle_left.png",
    "page": "page.png",
    "rocket": "rocket.jpg",
    "text": "text.png",
}
_LEVELS = 6


def data_folder() -> Path:
    """The ``data`` folder inside the installed scikit-image package."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-image is required for the photo textures of the generated benchmark")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@cache
def pyramid(name: str) -> tuple[np.ndarray, ...]:
    """Grey texture levels of photo ``name``: level 0 zero-mean unit-std, each next half size."""
    with Image.open(data_folder() / PHOTO_FILES[name]) as image:
        grey = np.asarray(image.convert("L"), dtype=np.float32)
    grey = (grey - grey.mean()) / max(float(grey.std()), 1e-6)
    levels = [grey]
    for _ in range(_LEVELS - 1):
        levels.append(cv2.pyrDown(levels[-1]))
    return tuple(levels)


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` at (u, v) pixel coordinates, wrapping at the borders."""
    h, w = image.shape
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    x0, y0 = u0.astype(np.int64) % w, v0.astype(np.int64) % h
    x1, y1 = (x0 + 1) % w, (y0 + 1) % h
    top = image[y0, x0] * (1 - fu) + image[y0, x1] * fu
    bottom = image[y1, x0] * (1 - fu) + image[y1, x1] * fu
    return top * (1 - fv) + bottom * fv


def sample(name: str, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Texture values at texel coordinates (u, v) seen with ``footprint`` texels per pixel."""
    levels = pyramid(name)
    level = np.clip(np.floor(np.log2(np.maximum(footprint, 1e-6))), 0, _LEVELS - 1).astype(np.int64)
    out = np.empty(u.shape, dtype=np.float32)
    for k in np.unique(level):
        pick = level == k
        out[pick] = _bilinear(levels[k], u[pick] / 2.0**k, v[pick] / 2.0**k)
    return out
