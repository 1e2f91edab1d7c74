"""Cityscapes: ``ROOT/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png`` with ``gtFine`` label ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drsl.data.base import Sample, SegmentationDataset

IMAGE_SUFFIX = "_leftImg8bit"
LABEL_SUFFIX = "_gtFine_labelIds"


class CityscapesDataset(SegmentationDataset):
    """One Cityscapes split; sample names are ``CITY/CITY_SEQ_FRAME``.

    With ``require_labels=False`` (the unlabelled target train split) images without a
    ``*_gtFine_labelIds.png`` get all-ignore labels; labels that exist are still returned.
    """

    layout_name = "Cityscapes"
    name_suffix = IMAGE_SUFFIX
    native_mapping = "cityscapes"

    def __init__(self, root: str | Path, split: str = "train", **kwargs: Any) -> None:
        self.split = split
        super().__init__(root, **kwargs)

    @property
    def expected_layout(self) -> str:
        return (
            f"ROOT/leftImg8bit/{self.split}/CITY/*{IMAGE_SUFFIX}.png and "
            f"ROOT/gtFine/{self.split}/CITY/*{LABEL_SUFFIX}.png"
        )

    def discover(self) -> list[Sample]:
        images = self.subfolder(f"leftImg8bit/{self.split}")
        if self.require_labels:
            labels = self.subfolder(f"gtFine/{self.split}")
        else:
            labels = self.root / "gtFine" / self.split
        samples = []
        for path in images.glob(f"*/*{IMAGE_SUFFIX}.png"):
            stem = path.name.removesuffix(f"{IMAGE_SUFFIX}.png")
            city = path.parent.name
            label = labels / city / f"{stem}{LABEL_SUFFIX}.png"
            samples.append(Sample(f"{city}/{stem}", path, label))
        return samples
