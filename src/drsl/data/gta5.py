"""GTA5: ``ROOT/images/*.png`` with ``ROOT/labels/*.png`` (Cityscapes label ids, palette PNGs)."""

from __future__ import annotations

from drsl.data.base import Sample, SegmentationDataset, same_name_samples


class GTA5Dataset(SegmentationDataset):
    """The GTA5 (Playing for Data) source set; image/label size mismatches are screened out."""

    layout_name = "GTA5"
    expected_layout = "ROOT/images/*.png and ROOT/labels/*.png"
    native_mapping = "cityscapes"

    def discover(self) -> list[Sample]:
        return same_name_samples(self.subfolder("images"), self.subfolder("labels"))
