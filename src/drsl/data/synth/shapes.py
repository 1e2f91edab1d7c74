"""World-space polygons on the three plane families (front z = const, side x = const, ground)."""

from __future__ import annotations

import numpy as np


def front(points: np.ndarray | list[tuple[float, float]], z: float, x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    """2-D points (x, y) in metres, offset by (x0, y0), on the front plane at depth ``z``."""
    pts = np.asarray(points, dtype=np.float64)
    return np.column_stack([pts[:, 0] + x0, pts[:, 1] + y0, np.full(len(pts), z)])


def front_rect(x0: float, x1: float, y0: float, y1: float, z: float) -> np.ndarray:
    """Axis-aligned rectangle on the front plane at depth ``z``."""
    return front([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], z)


def side_rect(x: float, z0: float, z1: float, y0: float, y1: float) -> np.ndarray:
    """Rectangle on the side plane x = ``x`` spanning depths z0..z1 and heights y0..y1."""
    return np.array([[x, y0, z0], [x, y0, z1], [x, y1, z1], [x, y1, z0]], dtype=np.float64)


def ground_rect(x0: float, x1: float, z0: float, z1: float, y: float = 0.0) -> np.ndarray:
    """Rectangle on the horizontal plane at height ``y``."""
    return np.array([[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]], dtype=np.float64)


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 18) -> np.ndarray:
    """2-D ellipse outline (n, 2), to be placed with :func:`front`."""
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.column_stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)])


def side_disc(x: float, cy: float, cz: float, r: float, n: int = 16) -> np.ndarray:
    """A disc (a wheel) on the side plane x = ``x`` centred at height cy, depth cz."""
    outline = ellipse(cz, cy, r, r, n)
    return np.column_stack([np.full(n, x), outline[:, 1], outline[:, 0]])


def ground(points: np.ndarray | list[tuple[float, float]], y: float = 0.0) -> np.ndarray:
    """2-D points (x, z) on the horizontal plane at height ``y``."""
    pts = np.asarray(points, dtype=np.float64)
    return np.column_stack([pts[:, 0], np.full(len(pts), y), pts[:, 1]])
