"""The two domains of the hard shift: camera geometry, street content and rendering style of each.

The source ("simulator") and the target ("camera") differ in camera height, pitch (horizon),
focal length, roll, in how far away objects stand, in what lines the street, in how many
objects of each kind appear and in their mode mix (the mixes themselves live in
:mod:`.catalogue`). Other shifts are variations of these two (see :mod:`.shifts`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

Range = tuple[float, float]


@dataclass(frozen=True)
class Domain:
    """Everything a scene of one domain is sampled from (ranges are uniform)."""

    name: str
    horizon: Range  # horizon row as a fraction of the image height
    focal: Range  # focal length as a fraction of the image width
    elevation: Range  # camera height above the road, metres
    roll_deg: float  # largest camera roll, degrees
    object_depth: Range  # depth range of dynamic objects, metres
    sides: dict[str, float]  # probability of each roadside layout
    counts: dict[str, tuple[int, int]]  # objects per image, inclusive ranges
    probabilities: dict[str, float]  # chance of the optional elements of a scene
    hood: bool  # ego-vehicle bonnet at the bottom (label id 1, as in Cityscapes)
    photographic: bool  # photo textures and camera effects instead of flat shading
    mix: float  # mode mix: 0 the catalogue's source mix, 1 its target mix, between: a blend
    shadows: bool  # cast shadows of buildings, cars and trees darken the road level

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for the manifest."""
        return asdict(self)


SOURCE = Domain(
    name="source",
    horizon=(0.44, 0.52),
    focal=(0.62, 0.74),
    elevation=(1.9, 2.4),
    roll_deg=0.0,
    object_depth=(5.0, 70.0),
    sides={"urban": 0.45, "park": 0.30, "mixed": 0.25},
    counts={"car": (2, 6), "person": (1, 4), "rider": (0, 2), "parked_bicycle": (0, 1),
            "sign": (1, 3), "lamp": (1, 3)},
    probabilities={"bus": 0.30, "truck": 0.35, "train": 0.06, "traffic_light": 0.6, "tree_row": 0.5,
                   "crossing": 0.3, "verge": 0.15},
    hood=False,
    photographic=False,
    mix=0.0,
    shadows=False,
)

TARGET = Domain(
    name="target",
    horizon=(0.36, 0.43),
    focal=(0.82, 0.98),
    elevation=(1.2, 1.45),
    roll_deg=2.0,
    object_depth=(7.0, 45.0),
    sides={"urban": 0.60, "park": 0.12, "mixed": 0.28},
    counts={"car": (1, 5), "person": (2, 7), "rider": (0, 2), "parked_bicycle": (0, 3),
            "sign": (1, 4), "lamp": (1, 3)},
    probabilities={"bus": 0.20, "truck": 0.25, "train": 0.10, "traffic_light": 0.7, "tree_row": 0.55,
                   "crossing": 0.45, "verge": 0.45},
    hood=True,
    photographic=True,
    mix=1.0,
    shadows=True,
)
