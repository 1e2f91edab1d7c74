"""Turn a drawn canvas into pixels: flat simulator shading or textured camera photographs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .canvas import Canvas
from .catalogue import Paint
from .optics import camera_effects, illuminate
from .patterns import pattern_factor
from .photos import sample


def _groups(canvas: Canvas) -> Iterator[tuple[Paint, np.ndarray]]:
    """(paint, flat pixel indices) for every paint visible in the image."""
    paints: dict[Paint, int] = {}
    index = np.array([paints.setdefault(r.paint, len(paints)) for r in canvas.regions], dtype=np.int64)
    per_pixel = index[canvas.ids].ravel()
    order = np.argsort(per_pixel, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(per_pixel, minlength=len(paints)))])
    for paint, k in paints.items():
        if bounds[k + 1] > bounds[k]:
            yield paint, order[bounds[k] : bounds[k + 1]]


def _planes(canvas: Canvas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat per-pixel plane coordinates (s, t) and footprints in metres."""
    kind = canvas.table("kind")[canvas.ids]
    param = canvas.table("param")[canvas.ids]
    return tuple(a.ravel() for a in canvas.camera.plane_coords(kind, param))  # type: ignore[return-value]


#: Brightness of the road level inside a cast shadow in the simulator style.
FLAT_SHADOW = 0.55


def render_flat(canvas: Canvas, shadows: bool = False) -> np.ndarray:
    """Simulator style: solid colour per paint, flat face shading, procedural patterns, hard edges;
    with ``shadows``, hard-edged cast shadows on the road level."""
    colour = (canvas.table("rgb") * canvas.table("shade")[:, None].astype(np.float32))[canvas.ids]
    flat = colour.reshape(-1, 3)
    s, t, footprint = _planes(canvas)
    for paint, idx in _groups(canvas):
        if paint.pattern != "plain":
            flat[idx] *= pattern_factor(paint.pattern, paint.period, s[idx], t[idx], footprint[idx])[:, None]
    if shadows:
        colour[(canvas.shadow > 0) & canvas.on_road_level()] *= FLAT_SHADOW
    return np.clip(np.round(colour), 0, 255).astype(np.uint8)


def render_photo(canvas: Canvas, rng: np.random.Generator, shadows: bool = True) -> np.ndarray:
    """Camera style: photo-textured surfaces, per-object colour variation, light (with cast shadows
    if ``shadows``), then the camera."""
    n_regions = len(canvas.regions)
    instances = canvas.table("instance")
    count = int(instances.max()) + 1
    tint = rng.normal(1.0, 0.05, (count, 3)) * rng.normal(1.0, 0.07, (count, 1))  # hue and brightness
    sun = rng.uniform(0.5, 1.8)  # how strongly faces differ in brightness
    shade = 1.0 + (canvas.table("shade") - 1.0) * sun
    colour = (canvas.table("rgb") * tint[instances] * shade[:, None]).astype(np.float32)[canvas.ids]
    flat = colour.reshape(-1, 3)
    s, t, footprint = _planes(canvas)
    offset = rng.uniform(0.0, 500.0, (n_regions, 2))
    s = s + offset[:, 0][canvas.ids].ravel()
    t = t + offset[:, 1][canvas.ids].ravel()
    for paint, idx in _groups(canvas):
        texture = sample(paint.photo, s[idx] / paint.texel, -t[idx] / paint.texel, footprint[idx] / paint.texel)
        flat[idx] *= np.clip(1.0 + paint.contrast * texture, 0.25, 2.0)[:, None]
    lit = illuminate(colour, canvas, rng, shadows)
    return camera_effects(lit, rng)
