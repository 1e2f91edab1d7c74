"""Class sets as data: the packaged class files reproduce the Cityscapes / SYNTHIA label spaces,
lookups equal a per-pixel dictionary mapping, and broken class files are one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from drsl.config import ConfigError, load_config
from drsl.data.classes import bind_class_set, load_class_set, packaged_class_sets, parse_class_set
from drsl.data.labels import IGNORE_INDEX, apply_lookup

CITYSCAPES19 = load_class_set("cityscapes19")
#: The published mappings, written out independently of the class files.
CITYSCAPES_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                  25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
SYNTHIA_IDS = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12, 8: 13,
               19: 15, 12: 17, 11: 18}


def naive(mapping: dict[int, int], raw: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: mapping.get(int(v), IGNORE_INDEX), otypes=[np.uint8])(raw)


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 8), st.integers(1, 8)), elements=st.integers(0, 33)))
def test_cityscapes_lookup_matches_dictionary(raw: np.ndarray) -> None:
    mapping = CITYSCAPES19.mapping("cityscapes")
    assert mapping.valid_values == list(range(34))
    assert np.array_equal(apply_lookup(mapping.table(), raw), naive(CITYSCAPES_IDS, raw))


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 8), st.integers(1, 8)), elements=st.integers(0, 22)))
def test_synthia_lookup_matches_dictionary(raw: np.ndarray) -> None:
    mapping = CITYSCAPES19.mapping("synthia")
    assert mapping.valid_values == list(range(23))
    mapped = apply_lookup(mapping.table(), raw)
    assert np.array_equal(mapped, naive(SYNTHIA_IDS, raw))
    assert set(np.unique(mapped)) <= set(CITYSCAPES19.subset(16)) | {IGNORE_INDEX}


def test_cityscapes19_names_colours_and_subsets() -> None:
    assert CITYSCAPES19.names[:3] == ("road", "sidewalk", "building") and CITYSCAPES19.names[-1] == "bicycle"
    assert CITYSCAPES19.colors[13] == (0, 0, 142) and CITYSCAPES19.num_classes == 19
    assert len(CITYSCAPES19.subset(16)) == 16 and len(CITYSCAPES19.subset(13)) == 13
    assert set(CITYSCAPES19.subset(13)) == set(CITYSCAPES19.subset(16)) - {3, 4, 5}
    assert set(SYNTHIA_IDS.values()) == set(CITYSCAPES19.subset(16))
    label = np.array([[0, 13, 255]], dtype=np.uint8)
    assert CITYSCAPES19.colorize(label).tolist() == [[[128, 64, 128], [0, 0, 142], [0, 0, 0]]]


#: Cityscapes' categories (cityscapes7) and the 19 evaluated classes each holds.
CATEGORIES = {"flat": {"road", "sidewalk"}, "construction": {"building", "wall", "fence"},
              "object": {"pole", "traffic light", "traffic sign"}, "nature": {"vegetation", "terrain"},
              "sky": {"sky"}, "human": {"person", "rider"},
              "vehicle": {"car", "truck", "bus", "train", "motorcycle", "bicycle"}}


@pytest.mark.parametrize("name", ["synthia16", "synthia13", "cityscapes7"])
def test_smaller_packaged_sets_agree_with_cityscapes19(name: str) -> None:
    """Every raw id goes to the class of the same name (cityscapes7: the category holding it),
    or is ignored when the smaller set has no such class."""
    classes = load_class_set(name)

    def expected(class_id: int) -> int:
        if class_id == IGNORE_INDEX:
            return IGNORE_INDEX
        wanted = CITYSCAPES19.names[class_id]
        holder = next((c for c in classes.names if c == wanted or wanted in CATEGORIES.get(c, ())), None)
        return IGNORE_INDEX if holder is None else classes.names.index(holder)

    for mapping in ("cityscapes", "synthia"):
        full, small = CITYSCAPES19.mapping(mapping), classes.mapping(mapping)
        assert small.values == {raw: expected(c) for raw, c in full.values.items()}


def test_every_packaged_set_loads() -> None:
    assert set(packaged_class_sets()) >= {"cityscapes19", "cityscapes7", "synthia16", "synthia13"}
    for name in packaged_class_sets():
        assert load_class_set(name).to_dict()["name"] == name


def test_class_file_round_trip_names_and_ids(tmp_path: Path) -> None:
    text = """
name: tissue
classes:
  - {id: 0, name: background, color: [0, 0, 0]}
  - {id: 1, name: tumour, color: [255, 0, 0]}
  - {id: 2, name: stroma, color: [0, 255, 0]}
subsets: {2: [tumour, stroma]}
mappings:
  scanner_a: {values: {0: background, 128: tumour, 200: 2}, ignore: [255]}
"""
    path = tmp_path / "tissue.yaml"
    path.write_text(text)
    classes = load_class_set(str(path))
    assert classes.subset(2) == (1, 2) and classes.subset(3) == (0, 1, 2)
    assert classes.mapping("scanner_a").values == {0: 0, 128: 1, 200: 2, 255: IGNORE_INDEX}
    assert classes.mapping("ids").values == {0: 0, 1: 1, 2: 2, 255: IGNORE_INDEX}
    assert parse_class_set(yaml.safe_load(yaml.safe_dump(classes.to_dict())), "again") == classes


@pytest.mark.parametrize("broken, message", [
    ("classes: []", "needs 'classes'"),
    ("classes: [{id: 1, name: a, color: [0, 0, 0]}]", "ids must be 0, 1, 2"),
    ("classes: [{id: 0, name: a, color: [0, 0]}]", "color must be"),
    ("classes: [{id: 0, name: a, color: [0, 0, 0]}, {id: 1, name: a, color: [0, 0, 0]}]", "repeated"),
    ("classes: [{id: 0, name: a, color: [0, 0, 0]}]\nmappings: {m: {values: {3: b}}}", "'b' is not a class"),
    ("classes: [{id: 0, name: a, color: [0, 0, 0]}]\nmappings: {m: {values: {3: 0}, ignore: [3]}}", "both mapped and ignored"),
    ("classes: [{id: 0, name: a, color: [0, 0, 0]}]\nsubsets: {2: [a]}", "keyed by their size"),
    ("classes: [{id: 0, name: a, color: [0, 0, 0]}]\ncolours: 1", "unknown keys"),
])
def test_broken_class_files_name_the_file_and_problem(tmp_path: Path, broken: str, message: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(broken)
    with pytest.raises(ConfigError, match=message) as info:
        load_class_set(str(path))
    assert str(path) in str(info.value)


def test_config_must_agree_with_its_class_set() -> None:
    config = load_config(None, ["data.classes=cityscapes7"])
    classes = bind_class_set(config)
    assert config.model.num_classes == 7 and config.data.eval_subsets == [7] and classes.name == "cityscapes7"
    with pytest.raises(ConfigError, match="model.num_classes=19 disagrees with data.classes=cityscapes7"):
        bind_class_set(load_config(None, ["data.classes=cityscapes7", "model.num_classes=19"]))
    with pytest.raises(ConfigError, match="no 16-class subset"):
        bind_class_set(load_config(None, ["data.classes=cityscapes7", "data.eval_subsets=[16]"]))
    with pytest.raises(ConfigError, match="neither a class file nor a registered class set"):
        bind_class_set(load_config(None, ["data.classes=nowhere.yaml"]))
