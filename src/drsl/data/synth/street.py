"""The static street: sky, ground, distant skyline, road, sidewalks and what lines each side.

Each side of the road is "urban" (a row of buildings at the back of the sidewalk), "mixed" (a
grass strip, a wall or fence, then buildings) or "park" (grass, a fence/wall/hedge, trees and a
tree line). Everything here is drawn before the depth-sorted objects of :mod:`.scene`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from .camera import FRONT, GROUND, SIDE
from .canvas import Canvas, Thing
from .catalogue import CLASS_MODES, GLASS, Mode, mode_weights
from .domains import Domain
from .furniture import draw_tree
from .shapes import ellipse, front, front_rect, ground_rect, side_rect

ROAD, SIDEWALK, BUILDING, WALL, FENCE, VEGETATION, TERRAIN, SKY = 0, 1, 2, 3, 4, 8, 9, 10
FAR = 400.0  # metres: where the road ends
SKYLINE = 220.0  # metres: depth of the distant skyline
HAZE = 5000.0  # metres: depth of the horizon haze band


def pick(rng: np.random.Generator, train_id: int, domain: Domain) -> int:
    """Draw a mode index of class ``train_id`` from the mix of ``domain``."""
    cumulative = _cumulative_mix(train_id, domain.mix)
    return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))


@cache
def _cumulative_mix(train_id: int, mix: float) -> np.ndarray:
    return np.cumsum(mode_weights(train_id, mix))


@dataclass(frozen=True)
class Street:
    """Cross-section of the street (world metres) and the per-image choices that go with it."""

    centre: float
    lanes: int
    lane_width: float
    verge: tuple[float, float]
    sidewalk: tuple[float, float]
    setback: tuple[float, float]
    sides: tuple[str, str]
    shadow_side: int
    shadow_reach: float
    crossing: float | None

    @classmethod
    def sample(cls, rng: np.random.Generator, domain: Domain) -> Street:
        """A random street of ``domain``; the camera drives in one of its lanes."""
        lanes, lane_width = int(rng.integers(2, 5)), rng.uniform(3.0, 3.6)
        lane = int(rng.integers(lanes // 2, lanes))
        names, probs = list(domain.sides), np.array(list(domain.sides.values()))
        sides = tuple(str(s) for s in rng.choice(names, size=2, p=probs / probs.sum()))
        setback = tuple(0.0 if s == "urban" else float(rng.uniform(2.0, 6.0)) for s in sides)
        crossing = float(rng.uniform(12.0, 35.0)) if rng.random() < domain.probabilities["crossing"] else None
        return cls(
            centre=-(-lanes * lane_width / 2 + (lane + 0.5) * lane_width),
            lanes=lanes,
            lane_width=lane_width,
            verge=(_verge(rng, domain), _verge(rng, domain)),
            sidewalk=(float(rng.uniform(2.0, 4.5)), float(rng.uniform(2.0, 4.5))),
            setback=(setback[0], setback[1]),
            sides=(sides[0], sides[1]),
            shadow_side=int(rng.choice([-1, 1])),
            shadow_reach=float(rng.uniform(0.2, 0.9)),
            crossing=crossing,
        )

    def curb(self, side: int) -> float:
        """x of the curb on ``side`` (-1 left, +1 right)."""
        return self.centre + side * self.lanes * self.lane_width / 2

    def walk(self, side: int) -> float:
        """x of the inner edge of the sidewalk (behind the grass verge, if any)."""
        return self.curb(side) + side * self.verge[side > 0]

    def outer(self, side: int) -> float:
        """x of the back of the sidewalk."""
        return self.walk(side) + side * self.sidewalk[side > 0]

    def facade(self, side: int) -> float:
        """x of the building line."""
        return self.outer(side) + side * self.setback[side > 0]

    def lane_centre(self, lane: int) -> float:
        """x of the centre of lane ``lane`` (0 = leftmost)."""
        return self.curb(-1) + (lane + 0.5) * self.lane_width


def _verge(rng: np.random.Generator, domain: Domain) -> float:
    """Width of the grass verge between curb and sidewalk (0 when there is none)."""
    return float(rng.uniform(1.2, 2.5)) if rng.random() < domain.probabilities["verge"] else 0.0


def _new(canvas: Canvas, rng: np.random.Generator, domain: Domain, train_id: int) -> tuple[Thing, Mode]:
    """A new instance of ``train_id`` with a mode drawn from the domain's mix."""
    mode = pick(rng, train_id, domain)
    return canvas.thing(train_id, mode), CLASS_MODES[train_id][mode]


def _sky_and_ground(canvas: Canvas, rng: np.random.Generator, domain: Domain) -> None:
    """Sky over the whole frame with a paler haze band above the horizon, then the far terrain."""
    cam = canvas.camera
    thing, spec = _new(canvas, rng, domain, SKY)
    canvas.fill_pixels(np.array([[0, 0], [cam.width, 0], [cam.width, cam.height], [0, cam.height]]),
                       canvas.region(thing, spec.paint, FRONT, 100.0))
    haze = rng.uniform(0.08, 0.2) * cam.height * HAZE / cam.focal  # metres high at depth HAZE
    canvas.fill(front_rect(-HAZE, HAZE, 0.0, haze, HAZE), canvas.region(thing, spec.accent, FRONT, 100.0))
    thing, spec = _new(canvas, rng, domain, TERRAIN)
    canvas.fill(ground_rect(-3000.0, 3000.0, 1.0, 8000.0), canvas.region(thing, spec.paint, GROUND, 0.0))


def _skyline(canvas: Canvas, rng: np.random.Generator, domain: Domain) -> None:
    """Distant blocks and tree clumps along the horizon."""
    x = -260.0
    while x < 260.0:
        width = rng.uniform(12.0, 45.0)
        if rng.random() < 0.3:
            thing, spec = _new(canvas, rng, domain, VEGETATION)
            blob = ellipse(x + width / 2, 0.0, width / 2, rng.uniform(6.0, 14.0))
            canvas.fill(front(blob, SKYLINE), canvas.region(thing, spec.paint, FRONT, SKYLINE))
        else:
            thing, spec = _new(canvas, rng, domain, BUILDING)
            rect = front_rect(x, x + width, 0.0, rng.uniform(8.0, 55.0), SKYLINE)
            canvas.fill(rect, canvas.region(thing, spec.paint, FRONT, SKYLINE, shade=0.9))
        x += width * rng.uniform(0.7, 1.1)


def _road(canvas: Canvas, rng: np.random.Generator, domain: Domain, street: Street) -> None:
    """Road surface with lane markings and an optional zebra crossing."""
    thing, spec = _new(canvas, rng, domain, ROAD)
    left, right = street.curb(-1), street.curb(1)
    canvas.fill(ground_rect(left, right, 0.3, FAR), canvas.region(thing, spec.paint, GROUND, 0.0))
    marks = [ground_rect(left + 0.3, left + 0.45, 0.3, FAR), ground_rect(right - 0.45, right - 0.3, 0.3, FAR)]
    phase = rng.uniform(0.0, 9.0)
    for lane in range(1, street.lanes):
        x = left + lane * street.lane_width
        marks += [ground_rect(x - 0.07, x + 0.07, z, z + 3.0) for z in np.arange(phase, 150.0, 9.0)]
    if street.crossing is not None:
        z = street.crossing
        marks += [ground_rect(x, x + 0.5, z, z + 3.0) for x in np.arange(left + 0.5, right - 0.4, 1.0)]
    canvas.fill(marks, canvas.region(thing, spec.accent, GROUND, 0.0))


def _band(side: int, inner: float, width: float) -> np.ndarray:
    """A ground strip along the road from ``inner`` (x) outwards by ``width`` metres."""
    outer = inner + side * width
    return ground_rect(min(inner, outer), max(inner, outer), 0.3, FAR)


def _sidewalk(canvas: Canvas, rng: np.random.Generator, domain: Domain, street: Street, side: int) -> None:
    """Curb, grass verge, sidewalk, and the grass strip behind it."""
    curb = street.curb(side)
    thing, spec = _new(canvas, rng, domain, SIDEWALK)
    width = street.verge[side > 0] + street.sidewalk[side > 0]
    canvas.fill(_band(side, curb, width), canvas.region(thing, spec.paint, GROUND, 0.0))
    canvas.fill(_band(side, curb, 0.25), canvas.region(thing, spec.accent, GROUND, 0.0))
    if street.verge[side > 0]:
        grass, grass_spec = _new(canvas, rng, domain, TERRAIN)
        canvas.fill(_band(side, curb + side * 0.25, street.verge[side > 0] - 0.25),
                    canvas.region(grass, grass_spec.paint, GROUND, 0.0))
    if street.sides[side > 0] != "urban":
        thing, spec = _new(canvas, rng, domain, TERRAIN)
        width = street.setback[side > 0] if street.sides[side > 0] == "mixed" else 80.0
        canvas.fill(_band(side, street.outer(side), width), canvas.region(thing, spec.paint, GROUND, 0.0))


def _building(canvas: Canvas, rng: np.random.Generator, domain: Domain, street: Street, side: int,
              z0: float, z1: float) -> None:
    """One building between depths z0 and z1: end face, facade, windows, shop front; its shadow."""
    x = street.facade(side)
    thing, spec = _new(canvas, rng, domain, BUILDING)
    height = rng.uniform(7.0, 34.0)
    if side == street.shadow_side:
        reach = height * street.shadow_reach
        canvas.cast_shadow(ground_rect(min(x, x - side * reach), max(x, x - side * reach), z0 + 1.0, z1 + 1.0))
    end = front_rect(min(x, x + side * 14.0), max(x, x + side * 14.0), 0.0, height, z0)
    canvas.fill(end, canvas.region(thing, spec.paint, FRONT, z0, shade=0.72))
    lit = 1.0 if side < 0 else 0.86  # flat shading: the right-hand facades face away from the light
    canvas.fill(side_rect(x, z0, z1, 0.0, height), canvas.region(thing, spec.paint, SIDE, x, shade=lit))
    glassy = spec.name == "glass"
    floor, bay = rng.uniform(2.9, 3.6), rng.uniform(2.2, 3.4)
    fw, fh = (0.88, 0.8) if glassy else (rng.uniform(0.35, 0.7), rng.uniform(0.4, 0.65))
    floors = np.arange(3.4, height - 1.2, floor)
    bays = np.arange(z0 + 0.6, z1 - bay * fw - 0.3, bay)
    windows = [side_rect(x, b, b + bay * fw, f, f + floor * fh) for f in floors for b in bays]
    canvas.fill(windows, canvas.region(thing, spec.accent, SIDE, x, shade=lit))
    if rng.random() < 0.5:
        shops = [side_rect(x, b, b + 3.2, 0.4, 2.6) for b in np.arange(z0 + 0.8, z1 - 3.5, 4.0)]
        canvas.fill(shops, canvas.region(thing, GLASS, SIDE, x, shade=0.9))


def _buildings(canvas: Canvas, rng: np.random.Generator, domain: Domain, street: Street, side: int) -> None:
    """A row of buildings along ``side``, with occasional gaps, drawn far to near."""
    spans, z = [], rng.uniform(0.5, 6.0)
    while z < 180.0:
        length = rng.uniform(8.0, 32.0)
        if rng.random() < 0.15:
            z += rng.uniform(4.0, 14.0)
        spans.append((z, z + length))
        z += length
    for z0, z1 in reversed(spans):
        _building(canvas, rng, domain, street, side, z0, z1)


def _barrier(canvas: Canvas, rng: np.random.Generator, domain: Domain, street: Street, side: int) -> None:
    """Wall, fence or hedge segments along the back of the sidewalk."""
    x = street.outer(side) + side * 0.3
    z = rng.uniform(1.0, 10.0)
    segments = []
    while z < 120.0:
        length = rng.uniform(10.0, 45.0)
        segments.append((z, z + length))
        z += length + rng.uniform(0.0, 12.0)
    for z0, z1 in reversed(segments):
        train_id = int(rng.choice([WALL, FENCE, VEGETATION], p=[0.4, 0.4, 0.2]))
        thing, spec = _new(canvas, rng, domain, train_id)
        height = rng.uniform(0.9, 2.4)
        canvas.fill(side_rect(x, z0, z1, 0.0, height), canvas.region(thing, spec.paint, SIDE, x, shade=0.92))
        if train_id == FENCE:
            posts = [side_rect(x, p, p + 0.12, 0.0, height + 0.1) for p in np.arange(z0, z1, 2.5)]
            canvas.fill(posts, canvas.region(thing, spec.accent, SIDE, x, shade=0.92))
        elif train_id == WALL:
            top = side_rect(x, z0, z1, height - 0.15, height)
            canvas.fill(top, canvas.region(thing, spec.accent, SIDE, x, shade=0.92))


def _park(canvas: Canvas, rng: np.random.Generator, domain: Domain, street: Street, side: int) -> None:
    """Tree line at the back of the park and scattered trees in it, drawn far to near."""
    x = street.outer(side) + side * rng.uniform(18.0, 35.0)
    thing, spec = _new(canvas, rng, domain, VEGETATION)
    zs = np.arange(0.5, 200.0, 4.0)
    tops = rng.uniform(6.0, 14.0, len(zs))
    outline = np.vstack([[x, 0.0, 200.0], [x, 0.0, 0.5], *[[x, t, z] for z, t in zip(zs, tops)]])
    canvas.fill(outline, canvas.region(thing, spec.paint, SIDE, x, shade=0.9))
    inner = street.outer(side)
    trees = [(rng.uniform(8.0, 90.0), inner + side * rng.uniform(3.0, 16.0)) for _ in range(rng.integers(3, 9))]
    for z, tx in sorted(trees, reverse=True):
        draw_tree(canvas, rng, pick(rng, VEGETATION, domain), tx, z)


def draw_street(canvas: Canvas, rng: np.random.Generator, domain: Domain, street: Street) -> None:
    """Draw everything static: sky, ground, skyline, road, both roadsides."""
    _sky_and_ground(canvas, rng, domain)
    _skyline(canvas, rng, domain)
    _road(canvas, rng, domain, street)
    for side in (-1, 1):
        _sidewalk(canvas, rng, domain, street, side)
        layout = street.sides[side > 0]
        if layout == "park":
            _park(canvas, rng, domain, street, side)
        else:
            _buildings(canvas, rng, domain, street, side)
        if layout != "urban":
            _barrier(canvas, rng, domain, street, side)
