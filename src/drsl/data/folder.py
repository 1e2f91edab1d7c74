"""A generic folder layout: ``ROOT/images/**`` (any image format PIL reads) with ``ROOT/masks/**`` PNG masks.

A mask shares its image's relative path, with a ``.png`` extension. Its raw values map to the
class set's classes through, in this order: a mapping of the class file named by ``mapping``, a
class map file ``class_map`` (YAML or JSON, raw value -> class id or name, 255 = ignore, e.g.
``{0: 255, 1: road, 2: 13}``), ``ROOT/class_map.yaml`` (or ``.json``, as written by
:func:`drsl.data.checks.convert_dataset`), or else the class set's ``ids`` mapping: the masks hold
class ids (255 = ignore). Mask values the mapping does not name are errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from drsl.config import ConfigError
from drsl.data.base import (
    LabelCodec,
    Sample,
    SegmentationDataset,
    same_name_samples,
)
from drsl.data.classes import IDS_MAPPING, ClassSet
from drsl.data.errors import DataError
from drsl.data.io import IMAGE_SUFFIXES, read_label
from drsl.data.labels import IGNORE_INDEX
from drsl.errors import parse_problem, shorten
from drsl.fileio import read_text_file
from drsl.yaml_io import load_yaml

CLASS_MAP_NAMES = ("class_map.yaml", "class_map.yml", "class_map.json")


def read_class_map(path: str | Path, classes: ClassSet) -> dict[int, int]:
    """Parse a YAML/JSON class map into {raw value: class id}, validating keys and values."""
    path = Path(path)
    text = read_text_file(path, "class map", DataError)
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else load_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DataError(path, f"class map cannot be parsed: {parse_problem(exc)}") from None
    if not isinstance(data, dict) or not data:
        raise DataError(path, "class map must be a non-empty mapping of raw value -> class id or name")
    mapping: dict[int, int] = {}
    for key, value in data.items():
        try:
            raw = int(key)
        except (TypeError, ValueError):
            raise DataError(path, f"class map key {shorten(key)} is not an integer raw value") from None
        if not 0 <= raw <= 65535:
            raise DataError(path, f"class map key {raw} is outside 0..65535")
        try:
            mapping[raw] = classes.class_id(value, f"class map value for {raw}")
        except ConfigError as exc:
            raise DataError(path, str(exc)) from None
    if all(value == IGNORE_INDEX for value in mapping.values()):
        raise DataError(path, f"class map maps no raw value to a class of {classes.name}")
    return mapping


class FolderDataset(SegmentationDataset):
    """Images and masks in parallel folder trees; names are relative paths without extension."""

    layout_name = "folder"
    native_mapping = IDS_MAPPING
    expected_layout = "ROOT/images/**/*.{png,jpg,jpeg} and ROOT/masks/**/*.png"

    def __init__(
        self, root: str | Path, class_map: str | Path | None = None, **kwargs: Any
    ) -> None:
        self.class_map_path = Path(class_map) if class_map is not None else None
        super().__init__(root, **kwargs)

    def discover(self) -> list[Sample]:
        images = self.subfolder("images")
        masks = self.root / "masks"
        if self.require_labels:
            masks = self.subfolder("masks")
        samples = same_name_samples(images, masks, IMAGE_SUFFIXES, recursive=True)
        seen: dict[str, Path] = {}
        for sample in samples:
            if sample.name in seen:
                problem = f"same name as {seen[sample.name]} (one mask cannot serve both)"
                raise DataError(sample.image_path, problem)
            seen[sample.name] = sample.image_path
        return samples

    def label_codec(self) -> LabelCodec:
        path = self.class_map_path or next(
            (self.root / name for name in CLASS_MAP_NAMES if (self.root / name).is_file()), None
        )
        if self.mapping is not None or path is None:
            return super().label_codec()
        mapping = read_class_map(path, self.classes)
        expected = f"values in class map {path}"
        return LabelCodec.from_mapping(read_label, mapping, mapping.keys(), expected)
