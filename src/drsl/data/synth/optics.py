"""Light and camera of the target domain: shadows, colour cast, vignetting, blur, noise, JPEG."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from .canvas import Canvas

#: Global white-balance casts (RGB gains) a camera image may have.
CASTS: tuple[tuple[float, float, float], ...] = (
    (1.0, 1.0, 1.0), (1.08, 1.0, 0.86), (0.9, 0.98, 1.12), (0.96, 1.04, 0.94),
)


def illuminate(colour: np.ndarray, canvas: Canvas, rng: np.random.Generator, shadows: bool = True) -> np.ndarray:
    """Cast shadows on the road level (if ``shadows``), a global colour cast and exposure, a gradient
    and vignetting."""
    h, w = colour.shape[:2]
    strength = rng.uniform(0.35, 0.6)
    light = np.ones((h, w), dtype=np.float32)
    if shadows:
        light -= strength * cv2.GaussianBlur(canvas.shadow.astype(np.float32), (0, 0), 0.8) * canvas.on_road_level()
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (cols - w / 2) / w, (rows - h / 2) / h
    angle = rng.uniform(0.0, 2.0 * np.pi)
    light *= 1.0 + rng.uniform(0.0, 0.35) * (u * np.cos(angle) + v * np.sin(angle))
    light *= 1.0 - rng.uniform(0.1, 0.35) * (u * u + v * v) * 2.0
    cast = np.array(CASTS[int(rng.integers(len(CASTS)))]) * rng.normal(1.0, 0.03, 3) * rng.uniform(0.85, 1.3)
    return colour * light[..., None] * cast.astype(np.float32)


def camera_effects(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Defocus or motion blur, shot and read noise, JPEG compression; returns uint8 RGB."""
    if rng.random() < 0.35:
        length = int(rng.integers(3, 8))
        kernel = np.zeros((length, length), dtype=np.float32)
        kernel[length // 2, :] = 1.0 / length
        rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(-20.0, 20.0), 1.0)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        image = cv2.filter2D(image, -1, kernel / max(float(kernel.sum()), 1e-6), borderType=cv2.BORDER_REFLECT)
    else:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.2))
    shot = rng.uniform(0.15, 0.45) * np.sqrt(np.clip(image, 0.0, None))
    image = image + rng.standard_normal(image.shape).astype(np.float32) * (shot + rng.uniform(1.5, 4.5))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)).save(
        buffer, format="JPEG", quality=int(rng.integers(30, 76)))
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()
