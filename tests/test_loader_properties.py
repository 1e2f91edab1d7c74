"""Property-based checks of the loaders a user hands files to: whatever structure a YAML file
holds (nested mappings, lists and scalars, random keys mixed with real key names), the config
loader and the class-file loader either succeed or raise ConfigError, never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drsl.config import RENAMED_KEYS, Config, ConfigError, config_to_dict, flat_items, load_config
from drsl.data.classes import load_class_set, parse_class_set

#: Key names the loaders know, so random structures reach the code that reads them.
CONFIG_KEYS = [
    "_base_", "name", "seed", "work_dir", "init_checkpoint", "data", "model", "optim", "train", "eval", "adapt",
    "source", "target", "val", "root", "layout", "resize", "crop_size", "scale_range", "batch_size", "classes",
    "eval_subsets", "backbone", "light_width", "num_classes", "lr", "betas", "iterations", "scales", "mix",
    "fd_weight", "fd_classes", "feature_distance", "weight", "pseudo_label", "portion_max", "drsl", "source_augment",
]
CLASS_KEYS = ["name", "classes", "subsets", "mappings", "id", "color", "values", "ignore", "description", "ids", "19"]

#: Bounded for CI (a few seconds); no example database is written into the checkout.
EXAMPLES = settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), text,
)


def structures(keys: list[str]) -> st.SearchStrategy[object]:
    """Nested YAML data whose mapping keys are mostly real key names."""
    key = st.one_of(st.sampled_from(keys), text, st.integers(-3, 300))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(key, inner, max_size=5)),
        max_leaves=25,
    )


#: Every dotted key of the schema, and the old names still read.
DOTTED_KEYS = sorted([*flat_items(config_to_dict(Config())), *RENAMED_KEYS, "data.target.root", "data.val.layout"])


@st.composite
def schema_shaped(draw: st.DrawFn) -> dict:
    """A config mapping along real key paths, a random structure placed at a random depth of each."""
    data: dict = {}
    for dotted in draw(st.lists(st.sampled_from(DOTTED_KEYS), max_size=6)):
        keys = dotted.split(".")[: draw(st.integers(1, len(dotted.split("."))))]
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else node
        node[keys[-1]] = draw(structures(CONFIG_KEYS))
    return data


def write(folder: str, name: str, data: object) -> Path:
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@EXAMPLES
@given(data=st.dictionaries(st.sampled_from(CONFIG_KEYS), structures(CONFIG_KEYS), max_size=5),
       base=structures(CONFIG_KEYS))
def test_config_loader_accepts_or_raises_config_error(data: dict, base: object) -> None:
    with tempfile.TemporaryDirectory() as folder:
        write(folder, "base.yaml", base)
        try:
            load_config(write(folder, "config.yaml", data))
        except ConfigError:
            pass


@EXAMPLES
@given(data=st.one_of(structures(CONFIG_KEYS), schema_shaped()))
@example(data={"adapt": {"mix": {"fd_weight": 1}, "feature_distance": 5}})  # a renamed key onto a scalar
@example(data={"_base_": 5})
@example(data={"_base_": [None]})
def test_config_loader_on_any_top_level(data: object) -> None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            load_config(write(folder, "config.yaml", data))
        except ConfigError:
            pass


@EXAMPLES
@given(classes=st.lists(st.fixed_dictionaries({"id": scalars | st.integers(0, 3), "name": scalars,
                                               "color": structures(CLASS_KEYS)}), max_size=4),
       extra=st.dictionaries(st.sampled_from(CLASS_KEYS), structures(CLASS_KEYS), max_size=4))
def test_class_file_loader_accepts_or_raises_config_error(classes: list, extra: dict) -> None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            load_class_set(str(write(folder, "classes.yaml", {"classes": classes, **extra})))
        except ConfigError:
            pass


@EXAMPLES
@given(data=structures(CLASS_KEYS))
@example(data={"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}], "subsets": [1]})
@example(data={"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}], "mappings": ["x"]})
@example(data={"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}], "name": {"a": 1}})
def test_class_set_parser_on_any_structure(data: object) -> None:
    try:
        parse_class_set(data, "the class set stored in c.pt")
    except ConfigError:
        pass


@EXAMPLES
@given(raw=st.binary(max_size=64))
def test_class_file_of_any_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "classes.yaml"
        path.write_bytes(raw)
        try:
            load_class_set(str(path))
        except ConfigError:
            pass
