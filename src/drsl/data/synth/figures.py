"""People and two-wheelers as flat figures standing on the front plane of their depth.

Shapes are given in local metres (s along the figure's heading, t up); ``squeeze`` foreshortens
s for figures seen at an angle, ``heading`` (+1 or -1) mirrors them.
"""

from __future__ import annotations

import numpy as np

from .camera import FRONT
from .canvas import Canvas, Thing
from .catalogue import CLASS_MODES, HAIR, RIM, SKIN, TYRE, Paint
from .shapes import ellipse, front

PERSON, RIDER, MOTORCYCLE, BICYCLE = 11, 12, 17, 18


class Figure:
    """Draws local-metre shapes of one thing at (x, z) with a heading and a foreshortening."""

    def __init__(self, canvas: Canvas, thing: Thing, x: float, z: float, heading: float, squeeze: float) -> None:
        self.canvas, self.thing, self.x, self.z = canvas, thing, x, z
        self.scale = np.array([heading * squeeze, 1.0])

    def _world(self, points: np.ndarray | list[tuple[float, float]]) -> np.ndarray:
        return front(np.asarray(points, dtype=np.float64) * self.scale, self.z, x0=self.x)

    def fill(self, paint: Paint, *polygons: np.ndarray | list[tuple[float, float]]) -> None:
        """Fill local polygons with ``paint`` (one region)."""
        rid = self.canvas.region(self.thing, paint, FRONT, self.z)
        self.canvas.fill([self._world(p) for p in polygons], rid)

    def line(self, paint: Paint, width: float, *polylines: np.ndarray | list[tuple[float, float]]) -> None:
        """Draw local polylines ``width`` metres thick (one region)."""
        rid = self.canvas.region(self.thing, paint, FRONT, self.z)
        for points in polylines:
            self.canvas.line(self._world(points), width, rid)


def _limb(top: tuple[float, float], bottom: tuple[float, float], width: float) -> list[tuple[float, float]]:
    """A quad of ``width`` from ``top`` to ``bottom`` (horizontal ends)."""
    return [(top[0] - width / 2, top[1]), (top[0] + width / 2, top[1]),
            (bottom[0] + width / 2, bottom[1]), (bottom[0] - width / 2, bottom[1])]


def _head(fig: Figure, rng: np.random.Generator, centre: tuple[float, float], radius: float, cover: Paint) -> None:
    """Skin-coloured head with a hair or helmet cap."""
    fig.fill(SKIN[int(rng.integers(len(SKIN)))], ellipse(centre[0], centre[1], radius * 0.85, radius, 14))
    cap = ellipse(centre[0] - 0.01, centre[1] + radius * 0.25, radius * 0.95, radius * 0.85, 14)
    fig.fill(cover, cap[cap[:, 1] >= centre[1] - radius * 0.1])


def draw_person(canvas: Canvas, rng: np.random.Generator, mode: int, x: float, z: float) -> None:
    """A standing or walking pedestrian whose feet are at (x, 0, z)."""
    top, legs = CLASS_MODES[PERSON][mode].paint, CLASS_MODES[PERSON][mode].accent
    height = rng.uniform(1.55, 1.92)
    side = rng.random() < 0.5
    fig = Figure(canvas, canvas.thing(PERSON, mode), x, z, rng.choice([-1.0, 1.0]), 1.0)
    hip, shoulder = 0.5 * height, 0.81 * height
    stride = rng.uniform(0.0, 0.28) if side else rng.uniform(0.0, 0.08)
    spread = 0.02 if side else 0.09
    fig.fill(legs, _limb((-spread, hip), (-spread - stride, 0.0), 0.15),
             _limb((spread, hip), (spread + stride, 0.0), 0.15))
    half = 0.13 if side else 0.2
    fig.fill(top, [(-half * 0.8, hip - 0.05), (half * 0.8, hip - 0.05), (half, shoulder), (-half, shoulder)])
    swing = stride * 0.8
    arm_x = 0.0 if side else half + 0.04
    fig.fill(top, _limb((-arm_x, shoulder - 0.02), (-arm_x - swing, hip - 0.05), 0.09),
             _limb((arm_x, shoulder - 0.02), (arm_x + swing, hip - 0.05), 0.09))
    _head(fig, rng, (0.0, 0.91 * height), 0.1 * height / 1.75, HAIR)


def _wheel(fig: Figure, paint: Paint, centre: tuple[float, float], radius: float, width: float) -> None:
    ring = ellipse(centre[0], centre[1], radius, radius, 16)
    fig.line(paint, width, np.vstack([ring, ring[:1]]))


def _rider(canvas: Canvas, rng: np.random.Generator, mode: int, x: float, z: float, heading: float, squeeze: float,
           hip: tuple[float, float], hand: tuple[float, float], foot: tuple[float, float]) -> None:
    """A rider sitting at ``hip`` with hands on ``hand`` and a foot at ``foot`` (local metres)."""
    jacket, dark = CLASS_MODES[RIDER][mode].paint, CLASS_MODES[RIDER][mode].accent
    fig = Figure(canvas, canvas.thing(RIDER, mode), x, z, heading, squeeze)
    lean = rng.uniform(0.15, 0.35)
    shoulder = (hip[0] + lean, hip[1] + 0.55)
    knee = ((hip[0] + foot[0]) / 2 + 0.2, (hip[1] + foot[1]) / 2 + 0.1)
    fig.line(dark, 0.14, [hip, knee, foot])
    fig.fill(jacket, [(hip[0] - 0.14, hip[1]), (hip[0] + 0.14, hip[1]),
                      (shoulder[0] + 0.14, shoulder[1]), (shoulder[0] - 0.14, shoulder[1])])
    fig.line(jacket, 0.09, [shoulder, ((shoulder[0] + hand[0]) / 2, shoulder[1] - 0.18), hand])
    _head(fig, rng, (shoulder[0] + 0.06, shoulder[1] + 0.17), 0.12, dark)


def draw_bicycle(canvas: Canvas, rng: np.random.Generator, mode: int, x: float, z: float, rider: int | None) -> None:
    """A bicycle (with a rider of mode ``rider`` unless None) seen from the side at an angle."""
    frame, saddle = CLASS_MODES[BICYCLE][mode].paint, CLASS_MODES[BICYCLE][mode].accent
    heading, squeeze = float(rng.choice([-1.0, 1.0])), rng.uniform(0.45, 1.0)
    fig = Figure(canvas, canvas.thing(BICYCLE, mode), x, z, heading, squeeze)
    r, rear, fore = 0.34, (-0.52, 0.34), (0.52, 0.34)
    seat, crank, bar = (-0.2, 0.88), (0.0, 0.3), (0.38, 0.98)
    for hub in (rear, fore):
        _wheel(fig, TYRE, hub, r, 0.05)
    fig.line(frame, 0.045, [rear, seat, crank, rear], [seat, (0.42, 0.82), crank], [(0.42, 0.82), fore],
             [fore, bar])
    fig.fill(saddle, [(seat[0] - 0.12, seat[1]), (seat[0] + 0.1, seat[1]), (seat[0] + 0.1, seat[1] + 0.05),
                      (seat[0] - 0.12, seat[1] + 0.05)])
    if rider is not None:
        _rider(canvas, rng, rider, x, z - 0.05, heading, squeeze, (seat[0], seat[1] + 0.06), bar, crank)


def draw_motorcycle(canvas: Canvas, rng: np.random.Generator, mode: int, x: float, z: float, rider: int) -> None:
    """A motorcycle with its rider seen from the side at an angle."""
    body, seat = CLASS_MODES[MOTORCYCLE][mode].paint, CLASS_MODES[MOTORCYCLE][mode].accent
    heading, squeeze = float(rng.choice([-1.0, 1.0])), rng.uniform(0.4, 1.0)
    fig = Figure(canvas, canvas.thing(MOTORCYCLE, mode), x, z, heading, squeeze)
    r = 0.32
    for hub in ((-0.7, r), (0.7, r)):
        fig.fill(TYRE, ellipse(hub[0], hub[1], r, r, 16))
        fig.fill(RIM, ellipse(hub[0], hub[1], r * 0.5, r * 0.5, 12))
    fig.fill(body, [(-0.55, 0.42), (-0.72, 0.72), (-0.15, 0.82), (0.3, 0.98), (0.58, 0.8), (0.5, 0.45),
                    (0.05, 0.3)])
    fig.fill(seat, [(-0.6, 0.74), (-0.1, 0.84), (-0.1, 0.92), (-0.62, 0.82)])
    fig.line(body, 0.06, [(0.7, r), (0.5, 1.05)])
    _rider(canvas, rng, rider, x, z - 0.05, heading, squeeze, (-0.3, 0.95), (0.45, 1.05), (0.05, 0.4))
