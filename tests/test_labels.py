"""Property tests of the label spaces: vectorised lookups equal a per-pixel dictionary mapping."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from drsl.data.labels import (
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_MAX_ID,
    CITYSCAPES_TABLE,
    CLASS_SUBSETS,
    IGNORE_INDEX,
    PALETTE,
    SYNTHIA_ID_TO_TRAIN_ID,
    SYNTHIA_MAX_ID,
    SYNTHIA_TABLE,
    TRAIN_ID_TO_CITYSCAPES_ID,
    apply_lookup,
    colorize,
    out_of_range_values,
)


def naive(mapping: dict[int, int], raw: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: mapping.get(int(v), IGNORE_INDEX), otypes=[np.uint8])(raw)


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 8), st.integers(1, 8)), elements=st.integers(0, CITYSCAPES_MAX_ID)))
def test_cityscapes_lookup_matches_dictionary(raw: np.ndarray) -> None:
    assert np.array_equal(apply_lookup(CITYSCAPES_TABLE, raw), naive(CITYSCAPES_ID_TO_TRAIN_ID, raw))


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 8), st.integers(1, 8)), elements=st.integers(0, SYNTHIA_MAX_ID)))
def test_synthia_lookup_matches_dictionary(raw: np.ndarray) -> None:
    mapped = apply_lookup(SYNTHIA_TABLE, raw)
    assert np.array_equal(mapped, naive(SYNTHIA_ID_TO_TRAIN_ID, raw))
    assert set(np.unique(mapped)) <= set(CLASS_SUBSETS[16]) | {IGNORE_INDEX}


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 600)))
def test_out_of_range_values_are_exactly_those_above_max(raw: np.ndarray) -> None:
    expected = sorted({int(v) for v in raw.ravel() if v > CITYSCAPES_MAX_ID})[:10]
    assert out_of_range_values(raw, CITYSCAPES_MAX_ID) == expected


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 18)))
def test_train_ids_round_trip_through_label_ids_and_colours(train: np.ndarray) -> None:
    assert np.array_equal(apply_lookup(CITYSCAPES_TABLE, TRAIN_ID_TO_CITYSCAPES_ID[train]), train)
    assert np.array_equal(colorize(train), PALETTE[train])


def test_subsets() -> None:
    assert len(CLASS_SUBSETS[16]) == 16 and len(CLASS_SUBSETS[13]) == 13
    assert set(CLASS_SUBSETS[13]) == set(CLASS_SUBSETS[16]) - {3, 4, 5}
    assert set(SYNTHIA_ID_TO_TRAIN_ID.values()) == set(CLASS_SUBSETS[16])
