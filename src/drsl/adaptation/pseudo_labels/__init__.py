"""Class-balanced pseudo-labels (CBST rule) in bounded memory.

- :mod:`.histogram`: confidence scores -log(1 - p) as uint16 levels, streaming per-class
  histograms, thresholds.
- :mod:`.writer`: one-pass, resumable, fingerprinted sets of prediction, runner-up and score PNGs
  with a manifest of thresholds (rounds host); :func:`load_pseudo_label` applies CRST's selection.
- :mod:`.selection`: the thresholds on one batch with exact torch ops (online host), each pixel
  kept where its predicted class clears its own threshold.
- :mod:`.quality`: precision and coverage of pseudo-labels against ground truth.
"""

from drsl.adaptation.pseudo_labels.histogram import (
    KEEP_NOTHING,
    LEVELS,
    LEVELS_PER_NAT,
    ClassConfidenceHistogram,
    confidence_score,
    keep_count,
    level_confidence,
    quantize,
)
from drsl.adaptation.pseudo_labels.quality import (
    PseudoLabelQuality,
    pseudo_label_quality,
)
from drsl.adaptation.pseudo_labels.selection import (
    class_balanced_thresholds,
    portion_for_round,
    select_class_balanced,
)
from drsl.adaptation.pseudo_labels.writer import (
    PseudoLabelWriter,
    check_name,
    complete_set,
    is_complete,
    load_pseudo_label,
    read_manifest,
    select_labels,
    threshold_table,
)

__all__ = [
    "KEEP_NOTHING",
    "LEVELS",
    "LEVELS_PER_NAT",
    "ClassConfidenceHistogram",
    "PseudoLabelQuality",
    "PseudoLabelWriter",
    "check_name",
    "class_balanced_thresholds",
    "complete_set",
    "confidence_score",
    "is_complete",
    "keep_count",
    "level_confidence",
    "load_pseudo_label",
    "portion_for_round",
    "pseudo_label_quality",
    "quantize",
    "read_manifest",
    "select_class_balanced",
    "select_labels",
    "threshold_table",
]
