"""Build a dataset from a :class:`~drsl.config.DatasetConfig`, dispatching on its layout: the
``LAYOUTS`` registry, which user code and plug-ins extend (:mod:`drsl.plugins`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drsl.config import DatasetConfig
from drsl.data.errors import DataError
from drsl.plugins import Deferred, Registry

if TYPE_CHECKING:
    from drsl.data.base import SegmentationDataset
    from drsl.data.classes import ClassSet
    from drsl.data.transforms import PairTransform


def _is_layout(entry: Any) -> bool:
    from drsl.data.base import SegmentationDataset

    return isinstance(entry, type) and issubclass(entry, SegmentationDataset)


#: The layouts' modules (and torch) are imported when a dataset is built, not when a config names one.
LAYOUTS: Registry[type[SegmentationDataset]] = Registry(
    "dataset layout", "data.*.layout", "drsl.layouts",
    {
        "gta5": Deferred("drsl.data.gta5:GTA5Dataset"),
        "synthia": Deferred("drsl.data.synthia:SynthiaDataset"),
        "cityscapes": Deferred("drsl.data.cityscapes:CityscapesDataset"),
        "folder": Deferred("drsl.data.folder:FolderDataset"),
    },
    accepts=_is_layout, expects="a subclass of drsl.data.base.SegmentationDataset",
)


def build_dataset(
    cfg: DatasetConfig, classes: ClassSet, transform: PairTransform | None = None, require_labels: bool = True
) -> SegmentationDataset:
    """The dataset ``cfg`` describes, labelled with ``classes`` (``split`` for Cityscapes,
    ``class_map`` for folders)."""
    layout = LAYOUTS.lookup(cfg.layout)
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
    return layout(cfg.root, **kwargs)
