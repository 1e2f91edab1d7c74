"""Appearance catalogue: the paints every surface is made of and the modes of every class.

A :class:`Paint` says how one surface looks in each domain: a flat colour with a procedural
pattern in the simulator (source), the same colour modulated by a photo texture in the camera
(target). A :class:`Mode` is one appearance of a class (a red car, a glass building) with its
weight in the source mix and in the (shifted) target mix; a domain draws modes from the source
mix, the target mix or a blend of the two (``Domain.mix``), which is the mode-mix shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drsl.data.classes import load_class_set
from drsl.data.labels import IGNORE_INDEX

RGB = tuple[int, int, int]

#: The generated world's classes: Cityscapes' 19, written into label files as Cityscapes label ids.
CLASSES = load_class_set("cityscapes19")
LABEL_MAPPING = CLASSES.mapping("cityscapes")
#: Class id -> the Cityscapes label id written for it.
LABEL_ID = {class_id: raw for raw, class_id in LABEL_MAPPING.values.items() if class_id != IGNORE_INDEX}


@dataclass(frozen=True)
class Paint:
    """One surface: flat colour, source pattern (periods in metres), target photo texture."""

    rgb: RGB
    pattern: str = "plain"
    period: tuple[float, float] = (1.0, 1.0)
    photo: str = "gravel"
    texel: float = 0.01
    contrast: float = 0.15


@dataclass(frozen=True)
class Mode:
    """One appearance of a class: main paint, accent paint (details) and per-domain weights."""

    name: str
    paint: Paint
    accent: Paint
    source: float
    target: float


# Paints shared by all modes (details that are not what a mode is about).
GLASS = Paint((48, 58, 74), photo="camera", texel=0.012, contrast=0.35)
TYRE = Paint((28, 28, 30), photo="gravel", texel=0.004, contrast=0.2)
RIM = Paint((150, 150, 155), photo="rocket", texel=0.004, contrast=0.2)
TRUNK = Paint((92, 66, 44), "vlines", (0.12, 1.0), photo="grass", texel=0.003, contrast=0.35)
CURB = Paint((178, 176, 170), photo="moon", texel=0.006, contrast=0.2)
HAIR = Paint((45, 32, 24), photo="chelsea", texel=0.002, contrast=0.3)
SKIN: tuple[Paint, ...] = tuple(
    Paint(rgb, photo="coffee", texel=0.003, contrast=0.08)
    for rgb in ((236, 196, 166), (198, 150, 112), (140, 96, 66), (92, 62, 44))
)
LAMPS: tuple[Paint, ...] = tuple(
    Paint(rgb, photo="moon", texel=0.01, contrast=0.05)
    for rgb in ((235, 40, 30), (245, 170, 20), (40, 220, 90))
)
LAMP_OFF = Paint((55, 55, 58), photo="moon", texel=0.01, contrast=0.05)
TAIL_LIGHT = Paint((200, 25, 25), photo="coffee", texel=0.004, contrast=0.15)
HEAD_LIGHT = Paint((235, 232, 210), photo="coffee", texel=0.004, contrast=0.1)
PLATE = Paint((225, 225, 215), photo="page", texel=0.003, contrast=0.3)
HOOD = Paint((32, 34, 40), photo="camera", texel=0.006, contrast=0.45)

_P = Paint
# Train id -> modes. Source weights are all >= 0.10: the source under-represents modes, it never
# omits them.
CLASS_MODES: dict[int, tuple[Mode, ...]] = {
    0: (  # road; accent = lane markings
        Mode("dark asphalt", _P((64, 64, 68), photo="gravel", texel=0.006, contrast=0.22),
           _P((236, 236, 230), photo="gravel", texel=0.01, contrast=0.1), 0.70, 0.15),
        Mode("light asphalt", _P((128, 126, 122), "dots", (0.7, 0.7), "moon", 0.012, 0.3),
           _P((232, 196, 60), photo="gravel", texel=0.01, contrast=0.1), 0.20, 0.45),
        Mode("cobblestone", _P((112, 96, 84), "bricks", (0.5, 0.25), "gravel", 0.02, 0.45),
           _P((236, 236, 230), photo="gravel", texel=0.01, contrast=0.1), 0.10, 0.40),
    ),
    1: (  # sidewalk; accent = curb
        Mode("grey slabs", _P((152, 152, 150), "grid", (0.9, 0.9), "moon", 0.008, 0.25), CURB, 0.30, 0.50),
        Mode("red pavers", _P((166, 94, 82), "bricks", (0.6, 0.3), "brick", 0.004, 0.35), CURB, 0.60, 0.12),
        Mode("beige concrete", _P((198, 184, 154), photo="gravel", texel=0.012, contrast=0.18), CURB, 0.10, 0.38),
    ),
    2: (  # building; accent = windows
        Mode("brick", _P((150, 72, 52), "bricks", (1.0, 0.5), "brick", 0.006, 0.4),
           _P((40, 44, 56), photo="camera", texel=0.01, contrast=0.3), 0.50, 0.10),
        Mode("concrete", _P((160, 158, 152), "grid", (3.0, 3.2), "moon", 0.02, 0.3),
           _P((74, 84, 96), photo="camera", texel=0.01, contrast=0.3), 0.20, 0.40),
        Mode("glass", _P((74, 116, 146), "grid", (1.5, 3.2), "astronaut", 0.03, 0.45),
           _P((38, 60, 84), photo="camera", texel=0.02, contrast=0.4), 0.10, 0.35),
        Mode("plaster", _P((214, 194, 150), photo="gravel", texel=0.015, contrast=0.12),
           _P((62, 62, 72), photo="camera", texel=0.01, contrast=0.3), 0.20, 0.15),
    ),
    3: (  # wall; accent = coping
        Mode("concrete", _P((142, 142, 138), "grid", (2.0, 1.0), "moon", 0.01, 0.3),
           _P((110, 110, 108)), 0.20, 0.55),
        Mode("stone", _P((152, 130, 104), "bricks", (0.6, 0.3), "brick", 0.008, 0.45),
           _P((120, 104, 86)), 0.60, 0.15),
        Mode("painted", _P((92, 142, 124), "hlines", (1.0, 0.6), "ihc", 0.01, 0.35),
           _P((70, 100, 90)), 0.20, 0.30),
    ),
    4: (  # fence; accent = posts
        Mode("metal bars", _P((122, 126, 132), "vlines", (0.18, 1.0), "chessboard", 0.004, 0.4),
           _P((90, 92, 96)), 0.20, 0.50),
        Mode("wood", _P((142, 100, 62), "vlines", (0.3, 1.0), "grass", 0.003, 0.35),
           _P((100, 70, 44)), 0.60, 0.10),
        Mode("green mesh", _P((64, 112, 72), "grid", (0.3, 0.3), "chessboard", 0.002, 0.4),
           _P((50, 80, 56)), 0.20, 0.40),
    ),
    5: (  # pole; accent = lamp head / bands
        Mode("grey metal", _P((134, 134, 140), photo="rocket", texel=0.004, contrast=0.2),
           _P((90, 90, 95)), 0.60, 0.25),
        Mode("dark green", _P((44, 74, 54), photo="rocket", texel=0.004, contrast=0.2),
           _P((30, 50, 38)), 0.30, 0.25),
        Mode("black", _P((36, 36, 40), "hlines", (1.0, 0.5), "rocket", 0.004, 0.25),
           _P((200, 200, 200)), 0.10, 0.50),
    ),
    6: (  # traffic light housing; accent = backplate
        Mode("black", _P((32, 32, 34), photo="rocket", texel=0.003, contrast=0.2), _P((20, 20, 22)), 0.60, 0.30),
        Mode("yellow", _P((222, 182, 34), photo="rocket", texel=0.003, contrast=0.2), _P((30, 30, 30)), 0.30, 0.20),
        Mode("grey", _P((112, 114, 118), photo="rocket", texel=0.003, contrast=0.2), _P((230, 230, 230)), 0.10, 0.50),
    ),
    7: (  # traffic sign face; accent = border / symbol
        Mode("prohibition", _P((236, 236, 236), photo="page", texel=0.004, contrast=0.2),
           _P((204, 32, 32)), 0.50, 0.15),
        Mode("mandatory", _P((32, 82, 184), photo="page", texel=0.004, contrast=0.2),
           _P((240, 240, 240)), 0.20, 0.35),
        Mode("warning", _P((240, 210, 40), photo="page", texel=0.004, contrast=0.2),
           _P((204, 32, 32)), 0.20, 0.15),
        Mode("direction", _P((24, 112, 72), photo="text", texel=0.004, contrast=0.3),
           _P((240, 240, 240)), 0.10, 0.35),
    ),
    8: (  # vegetation; accent = second foliage tone
        Mode("green", _P((72, 132, 46), "dots", (0.6, 0.5), "grass", 0.004, 0.45),
           _P((52, 104, 36), "dots", (0.6, 0.5), "grass", 0.004, 0.45), 0.60, 0.30),
        Mode("autumn", _P((194, 122, 42), "dots", (0.8, 0.6), "chelsea", 0.006, 0.4),
           _P((164, 72, 30), "dots", (0.8, 0.6), "chelsea", 0.006, 0.4), 0.15, 0.35),
        Mode("dark conifer", _P((36, 76, 46), "vlines", (0.5, 1.0), "grass", 0.008, 0.5),
           _P((28, 60, 40), "vlines", (0.5, 1.0), "grass", 0.008, 0.5), 0.25, 0.35),
    ),
    9: (  # terrain
        Mode("lawn", _P((112, 166, 66), "vlines", (1.2, 1.0), "grass", 0.005, 0.35),
           _P((92, 146, 56)), 0.60, 0.25),
        Mode("dry grass", _P((176, 160, 96), photo="grass", texel=0.008, contrast=0.4),
           _P((150, 136, 80)), 0.25, 0.45),
        Mode("soil", _P((126, 100, 76), "dots", (0.5, 0.5), "gravel", 0.01, 0.45),
           _P((100, 80, 60)), 0.15, 0.30),
    ),
    10: (  # sky; accent = distant haze
        Mode("clear", _P((112, 166, 226), photo="grass", texel=2.5, contrast=0.05), _P((170, 200, 235)), 0.60, 0.20),
        Mode("overcast", _P((192, 196, 202), photo="gravel", texel=1.2, contrast=0.1), _P((210, 212, 216)), 0.25, 0.55),
        Mode("dusk", _P((226, 170, 132), photo="gravel", texel=2.5, contrast=0.07), _P((240, 200, 160)), 0.15, 0.25),
    ),
    11: (  # person; paint = top, accent = trousers
        Mode("dark", _P((42, 42, 50), photo="chelsea", texel=0.002, contrast=0.25),
           _P((32, 32, 38), photo="chelsea", texel=0.002, contrast=0.2), 0.15, 0.45),
        Mode("bright", _P((204, 52, 92), photo="coffee", texel=0.002, contrast=0.2),
           _P((52, 66, 116), photo="chelsea", texel=0.002, contrast=0.25), 0.55, 0.15),
        Mode("high-vis", _P((226, 226, 44), "hlines", (1.0, 0.25), "page", 0.003, 0.2),
           _P((64, 64, 72), photo="chelsea", texel=0.002, contrast=0.2), 0.20, 0.10),
        Mode("light", _P((204, 188, 162), photo="chelsea", texel=0.002, contrast=0.2),
           _P((112, 100, 90), photo="chelsea", texel=0.002, contrast=0.2), 0.10, 0.30),
    ),
    12: (  # rider; paint = jacket, accent = helmet/trousers
        Mode("sport jersey", _P((40, 122, 212), "hlines", (1.0, 0.2), "coffee", 0.002, 0.2),
           _P((30, 30, 36)), 0.60, 0.15),
        Mode("dark leather", _P((36, 32, 30), photo="chelsea", texel=0.002, contrast=0.3),
           _P((20, 20, 22)), 0.25, 0.50),
        Mode("courier", _P((240, 122, 32), photo="coffee", texel=0.002, contrast=0.2),
           _P((50, 50, 56)), 0.15, 0.35),
    ),
    13: (  # car body; accent = bumper trim
        Mode("red", _P((182, 30, 32), photo="coffee", texel=0.006, contrast=0.2), _P((40, 40, 44)), 0.35, 0.06),
        Mode("blue", _P((30, 62, 164), photo="rocket", texel=0.006, contrast=0.25), _P((40, 40, 44)), 0.35, 0.06),
        Mode("white", _P((226, 226, 222), photo="camera", texel=0.008, contrast=0.12), _P((70, 70, 74)), 0.10, 0.33),
        Mode("black", _P((26, 26, 30), photo="astronaut", texel=0.008, contrast=0.5), _P((60, 60, 64)), 0.10, 0.25),
        Mode("silver", _P((166, 170, 174), photo="moon", texel=0.008, contrast=0.2), _P((60, 60, 64)), 0.10, 0.30),
    ),
    14: (  # truck cargo box; accent = cab
        Mode("white box", _P((230, 230, 228), "vlines", (0.5, 1.0), "camera", 0.01, 0.12),
           _P((196, 32, 32)), 0.20, 0.50),
        Mode("orange", _P((230, 122, 32), "vlines", (0.5, 1.0), "rocket", 0.01, 0.2),
           _P((230, 122, 32)), 0.50, 0.15),
        Mode("grey corrugated", _P((150, 150, 152), "vlines", (0.25, 1.0), "chessboard", 0.004, 0.3),
           _P((60, 80, 120)), 0.30, 0.35),
    ),
    15: (  # bus; accent = stripe
        Mode("red", _P((192, 30, 36), photo="coffee", texel=0.01, contrast=0.15), _P((240, 240, 240)), 0.55, 0.10),
        Mode("yellow", _P((232, 192, 32), photo="rocket", texel=0.01, contrast=0.15), _P((40, 40, 40)), 0.30, 0.30),
        Mode("white", _P((226, 228, 230), photo="camera", texel=0.01, contrast=0.12), _P((30, 90, 180)), 0.15, 0.60),
    ),
    16: (  # train (tram); accent = stripe
        Mode("white-red", _P((230, 230, 230), photo="camera", texel=0.01, contrast=0.12),
             _P((200, 30, 30)), 0.60, 0.20),
        Mode("blue", _P((40, 80, 160), photo="rocket", texel=0.01, contrast=0.15), _P((230, 230, 230)), 0.40, 0.80),
    ),
    17: (  # motorcycle; accent = seat/engine
        Mode("black", _P((30, 30, 32), photo="motorcycle", texel=0.004, contrast=0.3), _P((90, 90, 95)), 0.20, 0.50),
        Mode("red", _P((204, 30, 30), photo="motorcycle", texel=0.004, contrast=0.25), _P((30, 30, 30)), 0.60, 0.15),
        Mode("chrome", _P((172, 174, 180), photo="motorcycle", texel=0.004, contrast=0.35),
             _P((30, 30, 30)), 0.20, 0.35),
    ),
    18: (  # bicycle frame; accent = saddle
        Mode("black", _P((30, 30, 36), photo="rocket", texel=0.003, contrast=0.2), _P((20, 20, 20)), 0.20, 0.55),
        Mode("red", _P((204, 40, 40), photo="rocket", texel=0.003, contrast=0.2), _P((30, 30, 30)), 0.40, 0.15),
        Mode("blue", _P((40, 92, 204), photo="rocket", texel=0.003, contrast=0.2), _P((30, 30, 30)), 0.40, 0.30),
    ),
}

#: Global index of every (train id, mode index); the per-pixel mode map stores these.
MODE_KEYS: tuple[tuple[int, int], ...] = tuple(
    (train_id, index) for train_id, modes in CLASS_MODES.items() for index in range(len(modes))
)
MODE_INDEX: dict[tuple[int, int], int] = {key: i for i, key in enumerate(MODE_KEYS)}


def mode_weights(train_id: int, mix: float) -> np.ndarray:
    """Normalised mode mix of a class: the source column blended towards the target column by ``mix``."""
    modes = CLASS_MODES[train_id]
    source = np.array([mode.source for mode in modes], dtype=np.float64)
    target = np.array([mode.target for mode in modes], dtype=np.float64)
    weights = (1.0 - mix) * source + mix * target
    return weights / weights.sum()


def mode_mixes(mixes: dict[str, float]) -> dict[str, dict[str, dict[str, float]]]:
    """Per class name, per domain name, the mode mix of domains with the given ``mix`` values."""
    return {
        CLASSES.names[train_id]: {
            domain: {mode.name: round(float(w), 4) for mode, w in zip(modes, mode_weights(train_id, mix))}
            for domain, mix in mixes.items()
        }
        for train_id, modes in CLASS_MODES.items()
    }
