"""SYNTHIA-RAND-CITYSCAPES: ``ROOT/RGB/*.png`` with 16-bit ``ROOT/GT/LABELS/*.png`` labels."""

from __future__ import annotations

from drsl.data.base import LabelCodec, Sample, SegmentationDataset, same_name_samples
from drsl.data.io import read_synthia_label
from drsl.data.labels import SYNTHIA_ID_TO_TRAIN_ID, SYNTHIA_MAX_ID


class SynthiaDataset(SegmentationDataset):
    """The SYNTHIA source set; class ids come from the label's R channel (read with OpenCV)."""

    layout_name = "SYNTHIA"
    expected_layout = "ROOT/RGB/*.png and ROOT/GT/LABELS/*.png"

    def discover(self) -> list[Sample]:
        return same_name_samples(self.subfolder("RGB"), self.subfolder("GT/LABELS"))

    def label_codec(self) -> LabelCodec:
        return LabelCodec.from_mapping(
            read_synthia_label, SYNTHIA_ID_TO_TRAIN_ID, range(SYNTHIA_MAX_ID + 1),
            f"SYNTHIA class ids 0..{SYNTHIA_MAX_ID}",
        )
