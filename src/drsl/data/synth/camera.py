"""Pinhole camera over a flat road: world metres to pixels, and pixels back to plane coordinates.

World axes: x to the right, y up (height above the road), z forward (depth). The camera sits at
x = 0, y = ``elevation``, looks along z with a level optical axis, so the horizon is the image
row ``horizon``; ``roll`` turns the image about the vanishing point.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .domains import Domain

#: Plane kinds a region lies on: a horizontal plane y = p, a side plane x = p, a front plane z = p.
GROUND, SIDE, FRONT = 0, 1, 2
_FAR = 1e4


@dataclass(frozen=True)
class Camera:
    """Intrinsics and pose; all lengths in pixels except ``elevation`` (metres)."""

    width: int
    height: int
    focal: float
    cx: float
    horizon: float
    elevation: float
    roll: float

    @classmethod
    def sample(cls, rng: np.random.Generator, domain: Domain, width: int, height: int) -> Camera:
        """A random camera of ``domain`` for an image of ``width`` x ``height``."""
        return cls(
            width=width,
            height=height,
            focal=rng.uniform(*domain.focal) * width,
            cx=width / 2 + rng.uniform(-0.04, 0.04) * width,
            horizon=rng.uniform(*domain.horizon) * height,
            elevation=rng.uniform(*domain.elevation),
            roll=np.deg2rad(rng.uniform(-domain.roll_deg, domain.roll_deg)),
        )

    @cached_property
    def _rotation(self) -> tuple[float, float]:
        return float(np.cos(self.roll)), float(np.sin(self.roll))

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) with z > 0 to pixel coordinates (N, 2)."""
        scale = self.focal / np.maximum(points[:, 2], 0.05)
        a = points[:, 0] * scale
        b = (self.elevation - points[:, 1]) * scale
        cos, sin = self._rotation
        out = np.empty((len(points), 2))
        out[:, 0] = self.cx + cos * a - sin * b
        out[:, 1] = self.horizon + sin * a + cos * b
        return out

    def pixels_per_metre(self, z: float) -> float:
        """Image scale of an object at depth ``z``."""
        return self.focal / max(z, 0.05)

    def ground_row(self, z: float) -> float:
        """Image row of the road at depth ``z`` (ignoring roll)."""
        return self.horizon + self.focal * self.elevation / max(z, 0.05)

    def depth_of_row(self, row: float) -> float:
        """Depth of the road seen at image row ``row`` (ignoring roll); inverse of ground_row."""
        return self.focal * self.elevation / max(row - self.horizon, 1e-3)

    def plane_coords(self, kind: np.ndarray, param: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-pixel metric coordinates (s, t) on each pixel's plane, and metres per pixel.

        Ground planes give (x, z), side planes (z, y), front planes (x, y); ``param`` is the
        plane's height, x or z. The footprint is the larger of the two axes (foreshortening
        stretches ground and side planes along z). Rays that miss their plane get far values.
        """
        rows, cols = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        du, dv = cols + 0.5 - self.cx, rows + 0.5 - self.horizon
        cos, sin = self._rotation
        a, b = cos * du + sin * dv, -sin * du + cos * dv
        f = self.focal
        ground, side = kind == GROUND, kind == SIDE
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = np.where(ground, self.elevation - param, param)  # plane distance from the camera
            z = np.where(ground, f * distance / b, np.where(side, f * param / a, param))
            z = np.where((z > 0) & np.isfinite(z), np.minimum(z, _FAR), _FAR)
            x = a * z / f
            y = self.elevation - b * z / f
            slant = np.where(ground | side, z * z / (f * np.maximum(np.abs(distance), 1e-3)), 0.0)
        s = np.where(side, z, x)
        t = np.where(ground, z, y)
        footprint = np.maximum(z / f, slant)
        return np.clip(s, -_FAR, _FAR), np.clip(t, -_FAR, _FAR), np.minimum(footprint, _FAR)
