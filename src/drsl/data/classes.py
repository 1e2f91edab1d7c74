"""Class sets as data: the classes a model predicts, their colours, evaluation subsets and the
mappings from raw label values in the files to class ids, read from a YAML class file.

A class file (see ``drsl/data/class_sets/*.yaml`` and docs/your_own_data.md)::

    name: street4
    classes:                       # in id order: ids 0..C-1
      - {id: 0, name: background, color: [0, 0, 0]}
      - {id: 1, name: road, color: [128, 64, 128]}
    subsets: {1: [road]}           # optional evaluation subsets, keyed by their size
    mappings:                      # optional: raw label value -> class (id or name)
      sim: {values: {0: background, 10: road}, ignore: [255]}

``ignore`` lists raw values that are valid but unlabelled; a raw value neither mapped nor ignored
is an error naming the file. Every class set also has the mapping ``ids`` (values 0..C-1 are the
class ids, 255 is ignored), for masks that already hold class ids. ``data.classes`` names a
registered class set (``CLASS_SETS``: the packaged ones, and those user code and plug-ins add) or
a class file; the resolved set is copied into every run directory (``classes.yaml``) and
checkpoint, so results never depend on the file staying where it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from drsl.config import Config, ConfigError, file_error
from drsl.data.labels import IGNORE_INDEX, lookup_table
from drsl.errors import listed, parse_problem, shorten
from drsl.fileio import atomic_write_text, read_text_file
from drsl.plugins import Registry
from drsl.yaml_io import load_yaml

CLASS_SET_DIR = Path(__file__).parent / "class_sets"
DEFAULT_CLASS_SET = "cityscapes19"
#: The mapping every class set has: masks that hold class ids already.
IDS_MAPPING = "ids"
#: Most classes a set may have: ids must stay below the ignore value 255.
MAX_CLASSES = IGNORE_INDEX
MAX_RAW_VALUE = 65535


@dataclass(frozen=True)
class RawMapping:
    """Raw label values -> class ids (IGNORE_INDEX for the ignored ones); other values are errors."""

    values: dict[int, int]
    #: What valid raw values look like, for error messages.
    description: str

    @property
    def valid_values(self) -> list[int]:
        """Every raw value allowed to occur (mapped or ignored)."""
        return sorted(self.values)

    def table(self) -> np.ndarray:
        """The 65536-entry uint8 lookup table raw value -> class id (see drsl.data.labels)."""
        return lookup_table(self.values, max(self.values))


@dataclass(frozen=True)
class ClassSet:
    """The classes of a model: names and colours in id order, evaluation subsets, raw mappings."""

    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    #: Evaluation subsets by size, the whole set included (e.g. {19: all, 16: ..., 13: ...}).
    subsets: dict[int, tuple[int, ...]]
    mappings: dict[str, RawMapping]

    @property
    def num_classes(self) -> int:
        """How many classes the model predicts."""
        return len(self.names)

    @property
    def palette(self) -> np.ndarray:
        """(C, 3) uint8 RGB colours in id order."""
        return np.array(self.colors, dtype=np.uint8).reshape(-1, 3)

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """An HxWx3 uint8 image of a class-id map; ignored pixels (and unknown ids) are black."""
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: self.num_classes] = self.palette
        return table[label.astype(np.uint8)]

    @property
    def eval_subsets(self) -> list[int]:
        """The sizes of every evaluation subset, largest (the whole set: the headline) first."""
        return sorted(self.subsets, reverse=True)

    def subset(self, size: int) -> tuple[int, ...]:
        """Class ids of the evaluation subset of ``size`` classes."""
        if size not in self.subsets:
            known = ", ".join(str(k) for k in self.subsets)
            raise ConfigError(f"class set {self.name} has no {size}-class evaluation subset (it has: {known})")
        return self.subsets[size]

    def mapping(self, name: str) -> RawMapping:
        """The raw-value mapping called ``name`` (``ids`` always exists)."""
        if name == IDS_MAPPING:
            values = {i: i for i in range(self.num_classes)} | {IGNORE_INDEX: IGNORE_INDEX}
            return RawMapping(values, f"class ids 0..{self.num_classes - 1} of {self.name} or {IGNORE_INDEX}")
        if name not in self.mappings:
            known = ", ".join([*self.mappings, IDS_MAPPING])
            raise ConfigError(f"class set {self.name} has no label mapping {shorten(name)} (it has: {known})")
        return self.mappings[name]

    def class_id(self, value: int | str, where: str) -> int:
        """A class id from an id or a class name (``where`` names the entry in messages)."""
        if isinstance(value, str):
            if value not in self.names:
                raise ConfigError(f"{where}: {shorten(value)} is not a class of {self.name} ({', '.join(self.names)})")
            return self.names.index(value)
        if isinstance(value, bool) or not isinstance(value, int) or not (0 <= value < self.num_classes or value == IGNORE_INDEX):
            raise ConfigError(f"{where}: {shorten(value)} is not a class id 0..{self.num_classes - 1} or {IGNORE_INDEX}")
        return value

    def to_dict(self) -> dict[str, Any]:
        """The class file content (plain types: fits YAML, JSON and weights-only checkpoints)."""
        return {
            "name": self.name,
            "classes": [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(self.names, self.colors))],
            "subsets": {size: list(ids) for size, ids in self.subsets.items() if size != self.num_classes},
            "mappings": {
                name: {"description": m.description,
                       "values": {raw: v for raw, v in m.values.items() if v != IGNORE_INDEX},
                       "ignore": [raw for raw, v in m.values.items() if v == IGNORE_INDEX]}
                for name, m in self.mappings.items()
            },
        }


def _raw_value(value: Any, where: str) -> int:
    """An integer raw label value (digit strings too: JSON keys and quoted YAML keys)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RAW_VALUE:
        raise ConfigError(f"{where}: raw label value {shorten(value)} is not an integer 0..{MAX_RAW_VALUE}")
    return value


def _mapping(classes: ClassSet, name: str, data: Any, where: str) -> RawMapping:
    """Parse one ``mappings`` entry: ``{values: {raw: class}, ignore: [raw], description: str}``."""
    if not isinstance(data, dict) or not isinstance(data.get("values", {}), dict):
        raise ConfigError(f"{where}: mapping {shorten(name)} must be {{values: {{raw: class}}, ignore: [raw]}}")
    unknown = set(data) - {"values", "ignore", "description"}
    if unknown:
        raise ConfigError(f"{where}: mapping {shorten(name)} has unknown keys {shorten(sorted(map(str, unknown)))} (known: values, ignore, description)")
    values = {
        _raw_value(raw, f"{where}: mapping {name}"): classes.class_id(cls, f"{where}: mapping {name}, value {raw}")
        for raw, cls in data.get("values", {}).items()
    }
    ignore = data.get("ignore", [])
    if not isinstance(ignore, list):
        raise ConfigError(f"{where}: mapping {name}: ignore must be a list of raw values")
    for raw in ignore:
        raw = _raw_value(raw, f"{where}: mapping {name}, ignore")
        if values.get(raw, IGNORE_INDEX) != IGNORE_INDEX:
            raise ConfigError(f"{where}: mapping {name}: raw value {raw} is both mapped and ignored")
        values[raw] = IGNORE_INDEX
    if not values:
        raise ConfigError(f"{where}: mapping {shorten(name)} maps no raw values")
    description = data.get("description") or f"raw values of mapping {name!r} in class set {classes.name}"
    if not isinstance(description, str):
        raise ConfigError(f"{where}: mapping {shorten(name)}: description must be text, got {shorten(description)}")
    return RawMapping(dict(sorted(values.items())), description)


def parse_class_set(data: Any, where: str) -> ClassSet:
    """Build and check a class set from class-file content; ``where`` names the file in messages."""
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise ConfigError(f"{where}: a class file needs 'classes': a list of {{id, name, color}}")
    unknown = set(data) - {"name", "classes", "subsets", "mappings"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {shorten(sorted(map(str, unknown)))} (known: name, classes, subsets, mappings)")
    if len(data["classes"]) > MAX_CLASSES:
        raise ConfigError(f"{where}: {len(data['classes'])} classes; at most {MAX_CLASSES} (255 means ignore)")
    names, colors = [], []
    for index, entry in enumerate(data["classes"]):
        if not isinstance(entry, dict) or set(entry) != {"id", "name", "color"}:
            raise ConfigError(f"{where}: class #{index} must be {{id, name, color}}, got {shorten(entry)}")
        if not isinstance(entry["name"], str) or not entry["name"] or entry["name"] in names:
            raise ConfigError(f"{where}: class #{index}: name {shorten(entry['name'])} is empty, not text, or repeated")
        if type(entry["id"]) is not int or entry["id"] != index:
            raise ConfigError(f"{where}: class {shorten(entry['name'])} has id {shorten(entry['id'])}; ids must be 0, 1, 2, ... in order")
        color = entry["color"]
        if not (isinstance(color, list) and len(color) == 3 and all(type(c) is int and 0 <= c <= 255 for c in color)):
            raise ConfigError(f"{where}: class {shorten(entry['name'])}: color must be [R, G, B] in 0..255, got {shorten(color)}")
        names.append(entry["name"])
        colors.append(tuple(color))
    name = data.get("name") or where
    if not isinstance(name, str):
        raise ConfigError(f"{where}: name must be text, got {shorten(name)}")
    for section, shape in (("subsets", "{size: [class, ...]}"), ("mappings", "{name: {values: {raw: class}, ignore: [raw]}}")):
        if not isinstance(data.get(section) or {}, dict):
            raise ConfigError(f"{where}: {section} must be a mapping {shape}, got {shorten(data[section])}")
    classes = ClassSet(name, tuple(names), tuple(colors), {len(names): tuple(range(len(names)))}, {})
    subsets = dict(classes.subsets)
    for key, members in (data.get("subsets") or {}).items():
        size = int(key) if isinstance(key, str) and key.isdigit() else key
        if type(size) is not int:
            raise ConfigError(f"{where}: subset key {shorten(key)} must be the subset's size (a whole number)")
        if not isinstance(members, list):
            raise ConfigError(f"{where}: subset {size} must be a list of classes, got {shorten(members)}")
        ids = tuple(sorted({classes.class_id(m, f"{where}: subset {size}") for m in members}))
        if size != len(ids) or IGNORE_INDEX in ids:
            raise ConfigError(f"{where}: subset {size} lists {len(ids)} distinct classes; subsets are keyed by their size")
        subsets[size] = ids
    mappings = {}
    for mapping_name, entry in (data.get("mappings") or {}).items():
        if not isinstance(mapping_name, str):
            raise ConfigError(f"{where}: mapping name {shorten(mapping_name)} must be text")
        mappings[mapping_name] = _mapping(classes, mapping_name, entry, where)
    if IDS_MAPPING in mappings:
        raise ConfigError(f"{where}: the mapping name {IDS_MAPPING!r} is reserved (class ids as they are)")
    return dataclasses.replace(classes, subsets=subsets, mappings=mappings)


def packaged_class_sets() -> list[str]:
    """Names of the class sets shipped with drsl."""
    return sorted(p.stem for p in CLASS_SET_DIR.glob("*.yaml"))


#: Class sets by name -> their class file (``data.classes: NAME``).
CLASS_SETS: Registry[str | Path] = Registry(
    "class set", "data.classes", "drsl.class_sets", {name: CLASS_SET_DIR / f"{name}.yaml" for name in packaged_class_sets()},
    accepts=lambda entry: isinstance(entry, (str, Path)), expects="the path of a class file",
)


def _load_file(path: Path) -> ClassSet:
    """The class set of a class file, read again when the file changes."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise file_error(path, f"cannot read class file ({exc.strerror})") from None
    return _parse_file(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=32)
def _parse_file(path: Path, mtime_ns: int, size: int) -> ClassSet:
    """The class set in ``path`` as of ``mtime_ns`` and ``size`` (the cache key)."""
    text = read_text_file(path, "class file", file_error)
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"class file {path} is not valid YAML: {parse_problem(exc)}") from None
    return parse_class_set(data, str(path))


def load_class_set(spec: str) -> ClassSet:
    """A registered class set by name (``cityscapes19``) or a class file by path."""
    registered = CLASS_SETS.find(spec) if "/" not in spec else None
    path = Path(registered if registered is not None else spec).expanduser()
    if path.is_file():
        return _load_file(path.resolve())
    if registered is not None:
        raise ConfigError(f"data.classes={shorten(spec)}: the class file {path} it is registered with does not exist")
    raise ConfigError(
        f"data.classes={shorten(spec)} is neither a class file nor a registered class set "
        f"({', '.join(CLASS_SETS.names())})"
    )


def write_class_file(path: str | Path, classes: ClassSet) -> None:
    """Write ``classes`` as a class file (loadable with :func:`load_class_set`)."""
    header = f"# The class set of this run ({classes.name}), as resolved from data.classes.\n"
    atomic_write_text(path, header + yaml.safe_dump(classes.to_dict(), sort_keys=False, allow_unicode=True))


def stored_class_count(state: Mapping[str, Any], path: str | Path) -> int | None:
    """How many classes the checkpoint ``path`` predicts, from its class set or config (None: not
    recorded); a stored class set or count of the wrong structure is a ConfigError naming it."""
    if state.get("classes"):
        return parse_class_set(state["classes"], f"the class set stored in {path}").num_classes
    count = ((state.get("config") or {}).get("model") or {}).get("num_classes")
    if count is not None and (type(count) is not int or count < 1):
        raise ConfigError(f"{path}: the stored config's model.num_classes must be a whole number, got {shorten(count)}")
    return count


def checkpoint_class_set(state: Mapping[str, Any], path: str | Path, config: Config) -> ClassSet:
    """The class set a checkpoint predicts: the one stored in it (older checkpoints: their
    config's). A ``config`` naming another class set must have as many classes (ConfigError)."""
    if not state.get("classes"):
        return load_class_set(config.data.classes)
    stored = parse_class_set(state["classes"], f"the class set stored in {path}")
    stored_spec = ((state.get("config") or {}).get("data") or {}).get("classes")
    if config.data.classes != stored_spec:
        requested = load_class_set(config.data.classes)
        if requested.num_classes != stored.num_classes:
            raise ConfigError(
                f"{path} predicts {stored.num_classes} classes ({stored.name}) but "
                f"data.classes={config.data.classes} has {requested.num_classes}"
            )
    return stored


def bind_class_set(config: Config, classes: ClassSet | None = None) -> ClassSet:
    """Check ``config`` against its class set (or ``classes``) before any work, and fill in
    ``model.num_classes`` and the default evaluation subsets (all of the class set's); returns the
    class set.

    A model size or an evaluation subset that disagrees with the class set is a ConfigError.
    """
    classes = classes or load_class_set(config.data.classes)
    declared = config.model.num_classes
    if declared is not None and declared != classes.num_classes:
        raise ConfigError(
            f"model.num_classes={declared} disagrees with data.classes={config.data.classes} "
            f"({classes.num_classes} classes: {listed(classes.names, 8)})"
        )
    config.model.num_classes = classes.num_classes
    if not config.data.eval_subsets:
        config.data.eval_subsets = classes.eval_subsets
    for size in config.data.eval_subsets:
        if size not in classes.subsets:
            known = ", ".join(str(k) for k in classes.subsets)
            raise ConfigError(
                f"data.eval_subsets: class set {classes.name} has no {size}-class subset (it has: {known}; "
                "data.eval_subsets: [] evaluates them all)"
            )
    return classes
