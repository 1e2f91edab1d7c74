"""Street furniture: trees, lamp posts, traffic signs and traffic lights."""

from __future__ import annotations

import numpy as np

from .camera import FRONT
from .canvas import Canvas, Thing
from .catalogue import CLASS_MODES, LAMP_OFF, LAMPS, TRUNK, Paint
from .shapes import ellipse, front, front_rect, ground

POLE, LIGHT, SIGN, VEGETATION = 5, 6, 7, 8


def _pole(canvas: Canvas, mode: int, x: float, z: float, height: float, width: float,
          arm: float = 0.0) -> Thing:
    """A pole of ``height`` metres, with a horizontal arm reaching ``arm`` metres if non-zero."""
    thing = canvas.thing(POLE, mode)
    rid = canvas.region(thing, CLASS_MODES[POLE][mode].paint, FRONT, z)
    canvas.line(np.array([[x, 0.0, z], [x, height, z]]), width, rid)
    if arm:
        canvas.line(np.array([[x, height - 0.2, z], [x + arm, height, z]]), width * 0.6, rid)
    return thing


def draw_tree(canvas: Canvas, rng: np.random.Generator, mode: int, x: float, z: float) -> None:
    """A tree: trunk and a crown of blobs (a cone of layers for the conifer mode)."""
    main, second = CLASS_MODES[VEGETATION][mode].paint, CLASS_MODES[VEGETATION][mode].accent
    thing = canvas.thing(VEGETATION, mode)
    trunk_h, radius = rng.uniform(1.8, 3.2), rng.uniform(1.2, 2.6)
    canvas.cast_shadow(ground(ellipse(x + radius * 0.6, z, radius, radius * 0.5)))
    rid = canvas.region(thing, TRUNK, FRONT, z)
    canvas.line(np.array([[x, 0.0, z], [x, trunk_h + radius * 0.5, z]]), rng.uniform(0.18, 0.32), rid)
    cy = trunk_h + radius * 0.8
    if CLASS_MODES[VEGETATION][mode].name == "dark conifer":
        for k in range(3):
            half, base = radius * (1 - k / 4), cy - radius + k * 0.7 * radius
            layer = [(-half, base), (half, base), (0.0, cy + radius * (0.2 + k * 0.6))]
            canvas.fill(front(layer, z, x0=x), canvas.region(thing, main if k % 2 == 0 else second, FRONT, z))
        return
    blobs = rng.integers(3, 7)
    for k in range(blobs):
        ox, oy = rng.uniform(-0.6, 0.6, 2) * radius
        r = radius * rng.uniform(0.5, 0.8)
        rid = canvas.region(thing, main if k % 2 == 0 else second, FRONT, z)
        canvas.fill(front(ellipse(ox, cy + oy * 0.7, r, r * rng.uniform(0.75, 1.0)), z, x0=x), rid)


def draw_lamp(canvas: Canvas, rng: np.random.Generator, mode: int, x: float, z: float, reach: float) -> None:
    """A street lamp whose arm reaches ``reach`` metres towards the road (signed)."""
    height = rng.uniform(6.0, 8.5)
    thing = _pole(canvas, mode, x, z, height, rng.uniform(0.14, 0.2), reach)
    rid = canvas.region(thing, CLASS_MODES[POLE][mode].accent, FRONT, z)
    canvas.fill(front_rect(x + reach - 0.3, x + reach + 0.3, height - 0.2, height + 0.05, z), rid)


def draw_sign(canvas: Canvas, rng: np.random.Generator, pole_mode: int, mode: int, x: float, z: float) -> None:
    """A traffic sign on a thin pole; its shape follows the sign mode."""
    height = rng.uniform(2.2, 2.8)
    _pole(canvas, pole_mode, x, z, height, 0.07)
    face, mark = CLASS_MODES[SIGN][mode].paint, CLASS_MODES[SIGN][mode].accent
    thing = canvas.thing(SIGN, mode)
    name = CLASS_MODES[SIGN][mode].name
    zf = z - 0.05

    def fill(paint: Paint, polygon: list[tuple[float, float]] | np.ndarray) -> None:
        canvas.fill(front(polygon, zf, x0=x, y0=height), canvas.region(thing, paint, FRONT, zf))

    if name == "prohibition":
        fill(mark, ellipse(0.0, 0.0, 0.34, 0.34))
        fill(face, ellipse(0.0, 0.0, 0.25, 0.25))
    elif name == "mandatory":
        fill(face, ellipse(0.0, 0.0, 0.32, 0.32))
        arrow = [(-0.18, -0.04), (0.06, -0.04), (0.06, -0.12), (0.2, 0.0), (0.06, 0.12), (0.06, 0.04), (-0.18, 0.04)]
        fill(mark, arrow)
    elif name == "warning":
        fill(mark, [(-0.4, -0.28), (0.4, -0.28), (0.0, 0.42)])
        fill(face, [(-0.27, -0.2), (0.27, -0.2), (0.0, 0.26)])
    else:
        fill(face, [(-0.55, -0.3), (0.55, -0.3), (0.55, 0.3), (-0.55, 0.3)])
        for row in (0.12, -0.08):
            fill(mark, [(-0.4, row - 0.04), (0.3, row - 0.04), (0.3, row + 0.04), (-0.4, row + 0.04)])


def draw_traffic_light(canvas: Canvas, rng: np.random.Generator, pole_mode: int, mode: int, x: float, z: float,
                       reach: float) -> None:
    """A traffic light on a pole, hanging from an arm over the road when ``reach`` is non-zero."""
    height = rng.uniform(3.0, 4.2) if not reach else rng.uniform(5.0, 6.0)
    _pole(canvas, pole_mode, x, z, height, rng.uniform(0.12, 0.18), reach)
    housing, plate = CLASS_MODES[LIGHT][mode].paint, CLASS_MODES[LIGHT][mode].accent
    thing = canvas.thing(LIGHT, mode)
    cx, zf = x + reach, z - 0.05
    top = height - 0.05 if reach else height + 1.0
    canvas.fill(front_rect(cx - 0.3, cx + 0.3, top - 1.05, top + 0.05, zf), canvas.region(thing, plate, FRONT, zf))
    canvas.fill(front_rect(cx - 0.18, cx + 0.18, top - 0.95, top, zf), canvas.region(thing, housing, FRONT, zf))
    lit = int(rng.integers(3))
    for k in range(3):
        paint = LAMPS[k] if k == lit else LAMP_OFF
        lamp = front(ellipse(0.0, 0.0, 0.1, 0.1, 12), zf - 0.01, x0=cx, y0=top - 0.17 - 0.3 * k)
        canvas.fill(lamp, canvas.region(thing, paint, FRONT, zf - 0.01))
