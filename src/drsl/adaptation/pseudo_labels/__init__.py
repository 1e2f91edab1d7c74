"""Class-balanced pseudo-labels (CBST rule) in bounded memory.

- :mod:`.histogram`: uint16 confidence quantisation, streaming per-class histograms, thresholds.
- :mod:`.writer`: two-pass, resumable generation of uint8 label PNGs and a manifest (rounds host).
- :mod:`.selection`: the same rule on one batch with exact torch ops (online host).
- :mod:`.quality`: precision and coverage of pseudo-labels against ground truth.
"""

from drsl.adaptation.pseudo_labels.histogram import (
    KEEP_NOTHING,
    LEVELS,
    SCALE,
    ClassConfidenceHistogram,
    keep_count,
    quantize,
)
from drsl.adaptation.pseudo_labels.quality import PseudoLabelQuality, pseudo_label_quality
from drsl.adaptation.pseudo_labels.selection import (
    class_balanced_thresholds,
    portion_for_round,
    select_class_balanced,
)
from drsl.adaptation.pseudo_labels.writer import (
    PseudoLabelWriter,
    check_name,
    is_complete,
    read_manifest,
)

__all__ = [
    "KEEP_NOTHING",
    "LEVELS",
    "SCALE",
    "ClassConfidenceHistogram",
    "PseudoLabelQuality",
    "PseudoLabelWriter",
    "check_name",
    "class_balanced_thresholds",
    "is_complete",
    "keep_count",
    "portion_for_round",
    "pseudo_label_quality",
    "quantize",
    "read_manifest",
    "select_class_balanced",
]
