"""Procedural patterns of the flat-shaded source: lines, grids, bricks, dots on plane coordinates.

A pattern darkens thin bands (mortar, joints, slats) or blobs (leaf clumps) defined in metres on
the surface's own plane, so it recedes with perspective. It fades out where its period drops
below a few pixels, the way a game engine's mipmaps would hide it.
"""

from __future__ import annotations

import numpy as np

_DARK = 0.7  # brightness of a pattern line


def _lines(coord: np.ndarray, period: float, width: float = 0.12) -> np.ndarray:
    return np.mod(coord / period, 1.0) < width


def _mask(name: str, s: np.ndarray, t: np.ndarray, ps: float, pt: float) -> np.ndarray:
    if name == "hlines":
        return _lines(t, pt)
    if name == "vlines":
        return _lines(s, ps)
    if name == "grid":
        return _lines(s, ps, 0.06) | _lines(t, pt, 0.08)
    if name == "bricks":
        row = np.floor(t / pt)
        return _lines(t, pt, 0.14) | _lines(s + 0.5 * ps * np.mod(row, 2.0), ps, 0.07)
    if name == "dots":
        du, dv = np.mod(s / ps, 1.0) - 0.5, np.mod(t / pt + 0.5 * np.floor(s / ps), 1.0) - 0.5
        return du * du + dv * dv < 0.09
    raise ValueError(f"unknown pattern {name!r}")


def pattern_factor(name: str, period: tuple[float, float], s: np.ndarray, t: np.ndarray,
                   footprint: np.ndarray) -> np.ndarray:
    """Brightness multiplier of pattern ``name`` at plane coordinates (s, t) in metres."""
    if name == "plain":
        return np.ones(s.shape, dtype=np.float32)
    ps, pt = period
    pixels = min(ps, pt) / np.maximum(footprint, 1e-6)
    visible = np.clip((pixels - 2.5) / 3.0, 0.0, 1.0)
    return (1.0 - (1.0 - _DARK) * visible * _mask(name, s, t, ps, pt)).astype(np.float32)
