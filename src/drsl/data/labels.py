"""Label spaces: Cityscapes label ids, the 19 train ids, SYNTHIA ids, palettes and class subsets.

Everything that maps raw label values to train ids lives here, as 256-entry lookup tables applied
once per image with one vectorised indexing operation.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255
NUM_CLASSES = 19

CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

#: Cityscapes palette, one RGB colour per train id.
PALETTE: np.ndarray = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)

#: Cityscapes label id -> train id (ids not listed are ignored). GTA5 labels use the same ids.
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
#: Largest valid Cityscapes label id (0..33; -1 "license plate" is never stored in labelIds PNGs).
CITYSCAPES_MAX_ID = 33

#: SYNTHIA-RAND-CITYSCAPES class id -> Cityscapes train id (the 16 shared classes).
SYNTHIA_ID_TO_TRAIN_ID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12, 8: 13,
    19: 15, 12: 17, 11: 18,
}
#: Largest valid SYNTHIA class id (0 void .. 22 lane marking).
SYNTHIA_MAX_ID = 22

#: Train ids evaluated in each protocol. 16 = SYNTHIA's shared classes; 13 = 16 minus wall,
#: fence and pole.
CLASS_SUBSETS: dict[int, tuple[int, ...]] = {
    19: tuple(range(19)),
    16: (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),
    13: (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),
}


def lookup_table(mapping: dict[int, int], max_id: int) -> np.ndarray:
    """A 65536-entry uint8 table: valid ids map to train ids, other valid ids to IGNORE_INDEX.

    Entries above ``max_id`` hold IGNORE_INDEX too; callers detect out-of-range values with
    :func:`out_of_range_values` before mapping, so unknown values are reported, not hidden.
    """
    table = np.full(65536, IGNORE_INDEX, dtype=np.uint8)
    for raw_id, train_id in mapping.items():
        if raw_id > max_id:
            raise ValueError(f"label id {raw_id} exceeds the declared maximum {max_id}")
        table[raw_id] = train_id
    return table


def apply_lookup(table: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Map a raw integer label image to train ids with one vectorised lookup."""
    return table[raw.astype(np.int64, copy=False)] if raw.dtype.kind == "i" else table[raw]


def out_of_range_values(raw: np.ndarray, max_id: int) -> list[int]:
    """Distinct values of ``raw`` above ``max_id`` (at most 10, for error messages)."""
    bad = np.unique(raw[raw > max_id])
    return [int(v) for v in bad[:10]]


def colorize(label: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 Cityscapes-palette image for a train-id map; ignored pixels are black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(PALETTE)] = PALETTE
    return table[label.astype(np.uint8)]


CITYSCAPES_TABLE = lookup_table(CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_MAX_ID)
SYNTHIA_TABLE = lookup_table(SYNTHIA_ID_TO_TRAIN_ID, SYNTHIA_MAX_ID)
TRAIN_ID_TO_CITYSCAPES_ID: np.ndarray = np.array(
    [label_id for label_id, _ in sorted(CITYSCAPES_ID_TO_TRAIN_ID.items(), key=lambda kv: kv[1])],
    dtype=np.uint8,
)
