"""Painter's-algorithm canvas: world polygons rasterised as region ids, one table row per region.

Every drawn part (a car body, its windows, a facade) is one region: its Cityscapes label id, its
paint, the class mode it belongs to, its object instance and the plane it lies on. Later draws
cover earlier ones, so scenes are drawn far to near. Labels, colours and textures all come from
the same region map, so images and label maps agree pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .camera import FRONT, GROUND, Camera
from .catalogue import LABEL_ID, MODE_INDEX, Paint

_SHIFT = 4  # fractional bits of the cv2 polygon coordinates
_LIMIT = 1e5  # clamp for projected coordinates far outside the image


@dataclass(frozen=True)
class Thing:
    """One object instance: its label id and its class mode (global index, -1 for none)."""

    label: int
    mode: int
    instance: int


@dataclass(frozen=True)
class Region:
    """One drawn part of a thing."""

    thing: Thing
    paint: Paint
    kind: int
    param: float
    shade: float


_VOID = Region(Thing(0, -1, 0), Paint((0, 0, 0)), FRONT, 1.0, 1.0)


class Canvas:
    """Region-id raster of one image plus the table describing every region."""

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self.ids = np.zeros((camera.height, camera.width), dtype=np.int32)
        self.shadow = np.zeros((camera.height, camera.width), dtype=np.uint8)
        self.regions: list[Region] = [_VOID]
        self._instances = 0

    def thing(self, train_id: int, mode_index: int | None = None, label: int | None = None) -> Thing:
        """A new instance of class ``train_id`` (or of raw ``label`` id when given)."""
        self._instances += 1
        label_id = LABEL_ID[train_id] if label is None else label
        mode = -1 if mode_index is None else MODE_INDEX[(train_id, mode_index)]
        return Thing(label_id, mode, self._instances)

    def region(self, thing: Thing, paint: Paint, kind: int, param: float, shade: float = 1.0) -> int:
        """Register a part of ``thing`` lying on plane (kind, param); returns its region id."""
        self.regions.append(Region(thing, paint, kind, float(param), shade))
        return len(self.regions) - 1

    def _pixels(self, points: np.ndarray) -> np.ndarray:
        px = np.clip(self.camera.project(points), -_LIMIT, _LIMIT)
        return np.rint(px * (1 << _SHIFT)).astype(np.int32)

    def fill(self, polygons: np.ndarray | list[np.ndarray], region: int) -> None:
        """Fill world polygons, each (N, 3), with ``region`` (one projection, one cv2 call)."""
        polys = polygons if isinstance(polygons, list) else [polygons]
        if not polys:
            return
        pixels = self._pixels(np.concatenate(polys) if len(polys) > 1 else polys[0])
        parts = np.split(pixels, np.cumsum([len(p) for p in polys])[:-1]) if len(polys) > 1 else [pixels]
        cv2.fillPoly(self.ids, parts, region, cv2.LINE_8, _SHIFT)

    def fill_pixels(self, polygon: np.ndarray, region: int) -> None:
        """Fill a polygon given directly in pixel coordinates."""
        pts = np.round(np.asarray(polygon, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(self.ids, [pts], region, cv2.LINE_8, _SHIFT)

    def line(self, points: np.ndarray, width: float, region: int) -> None:
        """Draw a world polyline (N, 3) ``width`` metres thick (at least one pixel)."""
        depth = float(np.mean(points[:, 2]))
        thickness = max(1, int(round(width * self.camera.pixels_per_metre(depth))))
        cv2.polylines(self.ids, [self._pixels(points)], False, region, thickness, cv2.LINE_8, _SHIFT)

    def cast_shadow(self, polygon: np.ndarray) -> None:
        """Mark a world polygon on the road plane as shadowed (used by the photographic style)."""
        cv2.fillPoly(self.shadow, [self._pixels(polygon)], 1, cv2.LINE_8, _SHIFT)

    def on_road_level(self) -> np.ndarray:
        """Bool mask (H, W) of the pixels whose region lies on the road level (where shadows fall)."""
        return ((self.table("kind") == GROUND) & (self.table("param") == 0.0))[self.ids]

    def table(self, field: str) -> np.ndarray:
        """A per-region lookup array of one attribute: label, mode, instance, kind, param, shade, rgb."""
        if field == "rgb":
            return np.array([r.paint.rgb for r in self.regions], dtype=np.float32)
        if field in ("label", "mode", "instance"):
            return np.array([getattr(r.thing, field) for r in self.regions], dtype=np.int64)
        return np.array([getattr(r, field) for r in self.regions], dtype=np.float64)

    def label_map(self) -> np.ndarray:
        """The uint8 Cityscapes label-id image."""
        return self.table("label").astype(np.uint8)[self.ids]

