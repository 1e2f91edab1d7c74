"""Label lookups: raw label values to class ids through 65536-entry tables, one vectorised
indexing operation per image. Which values map to which classes is data: see
:mod:`drsl.data.classes` and the packaged class files in ``drsl/data/class_sets/``."""

from __future__ import annotations

import numpy as np

#: The class id of unlabelled pixels, in every class set (so sets have at most 255 classes).
IGNORE_INDEX = 255


def lookup_table(mapping: dict[int, int], max_id: int) -> np.ndarray:
    """A 65536-entry uint8 table: valid ids map to class ids, other valid ids to IGNORE_INDEX.

    Entries above ``max_id`` hold IGNORE_INDEX too; callers detect values that are not valid
    before mapping (:meth:`drsl.data.base.LabelCodec.unknown_values`), so they are reported, not
    hidden.
    """
    table = np.full(65536, IGNORE_INDEX, dtype=np.uint8)
    for raw_id, train_id in mapping.items():
        if raw_id > max_id:
            raise ValueError(f"label id {raw_id} exceeds the declared maximum {max_id}")
        table[raw_id] = train_id
    return table


def apply_lookup(table: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Map a raw integer label image to class ids with one vectorised lookup."""
    return table[raw.astype(np.int64, copy=False)] if raw.dtype.kind == "i" else table[raw]
