"""SYNTHIA-RAND-CITYSCAPES: ``ROOT/RGB/*.png`` with 16-bit ``ROOT/GT/LABELS/*.png`` labels."""

from __future__ import annotations

from drsl.data.base import Sample, SegmentationDataset, same_name_samples
from drsl.data.io import read_synthia_label


class SynthiaDataset(SegmentationDataset):
    """The SYNTHIA source set; class ids come from the label's R channel (read with OpenCV)."""

    layout_name = "SYNTHIA"
    expected_layout = "ROOT/RGB/*.png and ROOT/GT/LABELS/*.png"
    native_mapping = "synthia"
    read_raw = staticmethod(read_synthia_label)

    def discover(self) -> list[Sample]:
        return same_name_samples(self.subfolder("RGB"), self.subfolder("GT/LABELS"))
