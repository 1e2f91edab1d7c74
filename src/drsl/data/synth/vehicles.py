"""Vehicles as textured boxes seen in perspective: cars, trucks, buses and trams."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import FRONT, GROUND, SIDE
from .canvas import Canvas, Thing
from .catalogue import CLASS_MODES, GLASS, HEAD_LIGHT, PLATE, RIM, TAIL_LIGHT, TYRE, Paint
from .shapes import front_rect, ground_rect, side_disc, side_rect

CAR, TRUCK, BUS, TRAIN = 13, 14, 15, 16


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in world metres."""

    x0: float
    x1: float
    y0: float
    y1: float
    z0: float
    z1: float

    def visible_side(self) -> float | None:
        """x of the side face the camera (at x = 0) sees, if any."""
        if self.x0 > 0:
            return self.x0
        return self.x1 if self.x1 < 0 else None


def draw_box(canvas: Canvas, thing: Thing, box: Box, side: Paint, top: Paint, near: Paint | None) -> None:
    """Draw the visible faces of ``box`` far to near: side, top, near (skipped when None)."""
    x = box.visible_side()
    if x is not None:
        rid = canvas.region(thing, side, SIDE, x, shade=0.8)
        canvas.fill(side_rect(x, box.z0, box.z1, box.y0, box.y1), rid)
    if box.y1 < canvas.camera.elevation:
        rid = canvas.region(thing, top, GROUND, box.y1, shade=1.1)
        canvas.fill(ground_rect(box.x0, box.x1, box.z0, box.z1, box.y1), rid)
    if near is not None:
        rid = canvas.region(thing, near, FRONT, box.z0)
        canvas.fill(front_rect(box.x0, box.x1, box.y0, box.y1, box.z0), rid)


def draw_wheels(canvas: Canvas, thing: Thing, box: Box, axles: tuple[float, ...], radius: float) -> None:
    """Tyres on the visible side at depths ``axles`` and tyre stubs under the near face."""
    x = box.visible_side()
    if x is not None:
        tyre = canvas.region(thing, TYRE, SIDE, x, shade=0.9)
        rim = canvas.region(thing, RIM, SIDE, x, shade=0.9)
        canvas.fill([side_disc(x, radius, z, radius) for z in axles], tyre)
        canvas.fill([side_disc(x, radius, z, radius * 0.55) for z in axles], rim)
    stub = canvas.region(thing, TYRE, FRONT, box.z0 + 0.4)
    width = 0.28
    canvas.fill([front_rect(box.x0 + 0.05, box.x0 + 0.05 + width, 0.0, box.y0 + 0.1, box.z0 + 0.4),
                 front_rect(box.x1 - 0.05 - width, box.x1 - 0.05, 0.0, box.y0 + 0.1, box.z0 + 0.4)], stub)


def draw_lights(canvas: Canvas, thing: Thing, box: Box, height: float, away: bool) -> None:
    """Tail or head lights and a number plate on the near face."""
    z, w = box.z0 - 0.01, box.x1 - box.x0
    lamp = canvas.region(thing, TAIL_LIGHT if away else HEAD_LIGHT, FRONT, z)
    canvas.fill([front_rect(box.x0 + 0.05, box.x0 + 0.12 * w + 0.1, height, height + 0.16, z),
                 front_rect(box.x1 - 0.12 * w - 0.1, box.x1 - 0.05, height, height + 0.16, z)], lamp)
    cx = (box.x0 + box.x1) / 2
    canvas.fill(front_rect(cx - 0.26, cx + 0.26, box.y0 + 0.1, box.y0 + 0.22, z), canvas.region(thing, PLATE, FRONT, z))


def draw_car(canvas: Canvas, rng: np.random.Generator, mode: int, x: float, z: float, away: bool) -> None:
    """A car centred at lateral ``x`` whose near end is at depth ``z``."""
    paint, trim = CLASS_MODES[CAR][mode].paint, CLASS_MODES[CAR][mode].accent
    thing = canvas.thing(CAR, mode)
    width, length = rng.uniform(1.7, 1.95), rng.uniform(3.9, 4.8)
    belt, roof = rng.uniform(0.85, 1.0), rng.uniform(1.35, 1.55)
    body = Box(x - width / 2, x + width / 2, 0.28, belt, z, z + length)
    canvas.cast_shadow(ground_rect(body.x0 - 0.15, body.x1 + 0.15, z - 0.2, z + length + 0.4))
    draw_box(canvas, thing, body, paint, paint, None)
    inset = rng.uniform(0.1, 0.2)
    cabin = Box(body.x0 + inset, body.x1 - inset, belt, roof, z + 0.22 * length, z + 0.78 * length)
    draw_box(canvas, thing, cabin, GLASS, paint, GLASS)
    draw_wheels(canvas, thing, body, (z + 0.8, z + length - 0.8), 0.32)
    rid = canvas.region(thing, paint, FRONT, z)
    canvas.fill(front_rect(body.x0, body.x1, body.y0, belt, z), rid)
    rid = canvas.region(thing, trim, FRONT, z - 0.01)
    canvas.fill(front_rect(body.x0, body.x1, body.y0, body.y0 + 0.14, z - 0.01), rid)
    draw_lights(canvas, thing, body, belt - 0.28, away)


def draw_truck(canvas: Canvas, rng: np.random.Generator, mode: int, x: float, z: float, away: bool) -> None:
    """A box truck: cargo box and cab (the cab is the far part when it drives away)."""
    box_paint, cab_paint = CLASS_MODES[TRUCK][mode].paint, CLASS_MODES[TRUCK][mode].accent
    thing = canvas.thing(TRUCK, mode)
    width, cargo_len, cab_len = rng.uniform(2.3, 2.5), rng.uniform(5.5, 8.0), 2.1
    height = rng.uniform(3.2, 3.8)
    cab_z = z + cargo_len + 0.2 if away else z
    cargo_z = z if away else z + cab_len + 0.2
    cab = Box(x - width / 2 + 0.05, x + width / 2 - 0.05, 0.55, height - 0.6, cab_z, cab_z + cab_len)
    cargo = Box(x - width / 2, x + width / 2, 0.9, height, cargo_z, cargo_z + cargo_len)
    total = cargo_len + cab_len + 0.2
    canvas.cast_shadow(ground_rect(cargo.x0 - 0.2, cargo.x1 + 0.2, z - 0.2, z + total + 0.5))
    parts = [(cab, cab_paint, not away), (cargo, box_paint, False)]
    for box, paint, windscreen in sorted(parts, key=lambda part: -part[0].z0):
        draw_box(canvas, thing, box, paint, paint, paint)
        if windscreen:
            rid = canvas.region(thing, GLASS, FRONT, box.z0 - 0.01)
            canvas.fill(front_rect(box.x0 + 0.15, box.x1 - 0.15, box.y1 - 1.0, box.y1 - 0.15, box.z0 - 0.01), rid)
    axles = (z + 1.2, z + total - 1.0, z + total - 2.4)
    draw_wheels(canvas, thing, Box(cargo.x0, cargo.x1, 0.55, height, z, z + total), axles, 0.5)
    draw_lights(canvas, thing, cab if not away else cargo, 0.9 if away else 0.8, away)


def draw_long_vehicle(canvas: Canvas, rng: np.random.Generator, train_id: int, mode: int, x: float, z: float,
                      away: bool) -> None:
    """A bus (train id 15) or tram (16): one long box with a band of windows and a stripe."""
    paint, stripe = CLASS_MODES[train_id][mode].paint, CLASS_MODES[train_id][mode].accent
    thing = canvas.thing(train_id, mode)
    tram = train_id == TRAIN
    width = 2.65 if tram else rng.uniform(2.45, 2.55)
    length = rng.uniform(22.0, 30.0) if tram else rng.uniform(10.0, 12.5)
    height = rng.uniform(3.3, 3.6) if tram else rng.uniform(2.9, 3.2)
    floor = 0.45 if tram else 0.3
    body = Box(x - width / 2, x + width / 2, floor, height, z, z + length)
    canvas.cast_shadow(ground_rect(body.x0 - 0.2, body.x1 + 0.2, z - 0.2, z + length + 0.5))
    draw_box(canvas, thing, body, paint, paint, None)
    side = body.visible_side()
    if side is not None:
        panes = np.arange(z + 0.8, z + length - 1.6, 1.6 if tram else 1.35)
        glass = canvas.region(thing, GLASS, SIDE, side, shade=0.8)
        canvas.fill([side_rect(side, p, p + 1.2, 1.3, height - 0.45) for p in panes], glass)
        band = canvas.region(thing, stripe, SIDE, side, shade=0.8)
        canvas.fill(side_rect(side, z, z + length, 0.75, 1.0), band)
    axles = (z + 1.6, z + length - 2.4) if not tram else (z + 2.0, z + length / 2, z + length - 2.0)
    draw_wheels(canvas, thing, body, axles, 0.48 if not tram else 0.35)
    rid = canvas.region(thing, paint, FRONT, z)
    canvas.fill(front_rect(body.x0, body.x1, body.y0, height, z), rid)
    window = canvas.region(thing, GLASS, FRONT, z - 0.01)
    canvas.fill(front_rect(body.x0 + 0.15, body.x1 - 0.15, 1.5, height - 0.3, z - 0.01), window)
    band = canvas.region(thing, stripe, FRONT, z - 0.01)
    canvas.fill(front_rect(body.x0, body.x1, 0.75, 1.0, z - 0.01), band)
    draw_lights(canvas, thing, body, 0.5, away)
