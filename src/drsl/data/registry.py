"""Build a dataset from a :class:`~drsl.config.DatasetConfig`, dispatching on its layout."""

from __future__ import annotations

from typing import Any

from drsl.config import DatasetConfig
from drsl.data.base import SegmentationDataset
from drsl.data.cityscapes import CityscapesDataset
from drsl.data.classes import ClassSet
from drsl.data.errors import DataError
from drsl.data.folder import FolderDataset
from drsl.data.gta5 import GTA5Dataset
from drsl.data.synthia import SynthiaDataset
from drsl.data.transforms import PairTransform

LAYOUTS: dict[str, type[SegmentationDataset]] = {
    "gta5": GTA5Dataset,
    "synthia": SynthiaDataset,
    "cityscapes": CityscapesDataset,
    "folder": FolderDataset,
}


def build_dataset(
    cfg: DatasetConfig, classes: ClassSet, transform: PairTransform | None = None, require_labels: bool = True
) -> SegmentationDataset:
    """The dataset ``cfg`` describes, labelled with ``classes`` (``split`` for Cityscapes,
    ``class_map`` for folders)."""
    if cfg.layout not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {cfg.layout!r} (known: {', '.join(LAYOUTS)})")
    if not cfg.root:
        raise DataError("<empty root>", f"the {cfg.layout} dataset config has no root folder set")
    kwargs: dict[str, Any] = {
        "classes": classes,
        "mapping": cfg.mapping,
        "list_file": cfg.list_file,
        "resize": cfg.resize,
        "transform": transform,
        "on_error": cfg.on_error,
        "require_labels": require_labels,
    }
    if cfg.layout == "cityscapes":
        kwargs["split"] = cfg.split
    if cfg.layout == "folder":
        kwargs["class_map"] = cfg.class_map
    return LAYOUTS[cfg.layout](cfg.root, **kwargs)
