"""One whole scene: camera, static street, then objects and furniture drawn far to near."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .camera import FRONT, Camera
from .canvas import Canvas
from .catalogue import HOOD
from .domains import Domain
from .figures import BICYCLE, MOTORCYCLE, PERSON, RIDER, draw_bicycle, draw_motorcycle, draw_person
from .furniture import LIGHT, POLE, SIGN, draw_lamp, draw_sign, draw_traffic_light, draw_tree
from .street import VEGETATION, Street, draw_street, pick
from .vehicles import BUS, CAR, TRAIN, TRUCK, draw_car, draw_long_vehicle, draw_truck

Draw = Callable[[Canvas], None]


class Placer:
    """Collects depth-tagged draw calls and keeps vehicles in a lane from overlapping."""

    def __init__(self, rng: np.random.Generator, domain: Domain, street: Street) -> None:
        self.rng, self.domain, self.street = rng, domain, street
        self.items: list[tuple[float, Draw]] = []
        self._taken: list[tuple[float, float, float]] = []

    def add(self, z: float, draw: Callable[..., None], *args: object) -> None:
        """Queue ``draw(canvas, rng, *args)`` for depth ``z``."""
        self.items.append((z, _bind(draw, self.rng, args)))

    def free(self, x: float, z: float, length: float) -> bool:
        """Reserve road space at lateral ``x`` from depth z to z + length unless already taken."""
        for tx, tz, tl in self._taken:
            if abs(tx - x) < 2.2 and z < tz + tl + 1.5 and tz < z + length + 1.5:
                return False
        self._taken.append((x, z, length))
        return True

    def depth(self) -> float:
        """A depth for a dynamic object, denser near the camera (uniform in 1/z)."""
        near, far = self.domain.object_depth
        return float(1.0 / self.rng.uniform(1.0 / far, 1.0 / near))

    def mode(self, train_id: int) -> int:
        """A mode of ``train_id`` drawn from the domain's mix."""
        return pick(self.rng, train_id, self.domain)

    def count(self, name: str) -> int:
        """How many objects of kind ``name`` this image gets."""
        low, high = self.domain.counts[name]
        return int(self.rng.integers(low, high + 1))

    def chance(self, name: str) -> bool:
        """Whether optional element ``name`` appears in this image."""
        return bool(self.rng.random() < self.domain.probabilities[name])


def _bind(draw: Callable[..., None], rng: np.random.Generator, args: tuple[object, ...]) -> Draw:
    """``draw`` with everything but the canvas bound."""
    return lambda canvas: draw(canvas, rng, *args)


def _vehicles(p: Placer) -> None:
    """Cars (driving or parked), and now and then a bus, a truck or a tram."""
    street, rng = p.street, p.rng
    kinds = ["car"] * p.count("car")
    kinds += [k for k in ("bus", "truck", "train") if p.chance(k)]
    for kind in kinds:
        parked = kind == "car" and rng.random() < 0.35
        side = int(rng.choice([-1, 1]))
        if parked:
            x = street.curb(side) - side * 1.2
        elif kind == "train":
            x = street.centre + rng.uniform(-0.5, 0.5)
        else:
            x = street.lane_centre(int(rng.integers(street.lanes))) + rng.uniform(-0.3, 0.3)
        away = x > street.centre if not parked else side > 0
        length = {"car": 5.0, "truck": 10.5, "bus": 12.5, "train": 30.0}[kind]
        z = p.depth() if kind == "car" else p.depth() + 4.0
        if not p.free(x, z, length):
            continue
        if kind == "car":
            p.add(z, draw_car, p.mode(CAR), x, z, away)
        elif kind == "truck":
            p.add(z, draw_truck, p.mode(TRUCK), x, z, away)
        else:
            train_id = BUS if kind == "bus" else TRAIN
            p.add(z, draw_long_vehicle, train_id, p.mode(train_id), x, z, away)


def _sidewalk_x(p: Placer, side: int, margin: float = 0.4) -> float:
    """A random x on the sidewalk of ``side``."""
    inner, width = p.street.walk(side), p.street.sidewalk[side > 0]
    return inner + side * p.rng.uniform(margin, max(margin + 0.1, width - margin))


def _people(p: Placer) -> None:
    """Pedestrians (on sidewalks and the crossing), riders, parked bicycles."""
    street, rng = p.street, p.rng
    for _ in range(p.count("person")):
        side = int(rng.choice([-1, 1]))
        z = p.depth()
        p.add(z, draw_person, p.mode(PERSON), _sidewalk_x(p, side), z)
    if street.crossing is not None:
        for _ in range(int(rng.integers(1, 4))):
            z = street.crossing + rng.uniform(0.5, 2.5)
            p.add(z, draw_person, p.mode(PERSON), rng.uniform(street.curb(-1), street.curb(1)), z)
    for _ in range(p.count("rider")):
        side = int(rng.choice([-1, 1]))
        z = p.depth()
        if rng.random() < 0.45:
            x = street.lane_centre(int(rng.integers(street.lanes)))
            if p.free(x, z, 2.0):
                p.add(z, draw_motorcycle, p.mode(MOTORCYCLE), x, z, p.mode(RIDER))
        else:
            x = street.curb(side) - side * 0.8
            if p.free(x, z, 2.0):
                p.add(z, draw_bicycle, p.mode(BICYCLE), x, z, p.mode(RIDER))
    for _ in range(p.count("parked_bicycle")):
        z = p.depth()
        p.add(z, draw_bicycle, p.mode(BICYCLE), _sidewalk_x(p, int(rng.choice([-1, 1]))), z, None)


def _furniture(p: Placer) -> None:
    """Rows of street trees, lamps, signs and a pair of traffic lights."""
    street, rng = p.street, p.rng
    for side in (-1, 1):
        if street.sides[side > 0] != "park" and rng.random() < p.domain.probabilities["tree_row"]:
            x = street.curb(side) + side * (street.verge[side > 0] / 2 if street.verge[side > 0] else 0.9)
            for z in np.arange(rng.uniform(5.0, 12.0), 90.0, rng.uniform(7.0, 13.0)):
                p.add(float(z), draw_tree, p.mode(VEGETATION), x, float(z))
    for _ in range(p.count("lamp")):
        side = int(rng.choice([-1, 1]))
        z = rng.uniform(5.0, 60.0)
        p.add(z, draw_lamp, p.mode(POLE), street.curb(side) + side * 0.4, z, -side * rng.uniform(1.0, 2.0))
    for _ in range(p.count("sign")):
        side = int(rng.choice([-1, 1]))
        z = rng.uniform(4.0, 50.0)
        p.add(z, draw_sign, p.mode(POLE), p.mode(SIGN), street.curb(side) + side * 0.35, z)
    if p.chance("traffic_light"):
        z = street.crossing if street.crossing is not None else rng.uniform(12.0, 45.0)
        for side in (-1, 1):
            reach = -side * rng.uniform(2.5, 4.5) if rng.random() < 0.4 else 0.0
            p.add(z, draw_traffic_light, p.mode(POLE), p.mode(LIGHT), street.curb(side) + side * 0.5, z, reach)


def _hood(canvas: Canvas, rng: np.random.Generator) -> None:
    """The ego vehicle's bonnet along the bottom edge (Cityscapes label id 1, ignored)."""
    cam = canvas.camera
    top = cam.height * (1.0 - rng.uniform(0.07, 0.11))
    xs = np.linspace(0.0, cam.width, 17)
    ys = top + ((xs - cam.width / 2) / cam.width) ** 2 * cam.height * 0.12
    outline = np.vstack([np.column_stack([xs, ys]), [[cam.width, cam.height + 1], [0, cam.height + 1]]])
    thing = canvas.thing(0, label=1)
    canvas.fill_pixels(outline, canvas.region(thing, HOOD, FRONT, 1.0))


def compose(rng: np.random.Generator, domain: Domain, width: int, height: int) -> Canvas:
    """Sample and draw one scene of ``domain`` at ``width`` x ``height``."""
    canvas = Canvas(Camera.sample(rng, domain, width, height))
    street = Street.sample(rng, domain)
    draw_street(canvas, rng, domain, street)
    placer = Placer(rng, domain, street)
    _vehicles(placer)
    _people(placer)
    _furniture(placer)
    for _, draw in sorted(placer.items, key=lambda item: -item[0]):
        draw(canvas)
    if domain.hood:
        _hood(canvas, rng)
    return canvas
