"""DRSL regulariser: class-aware multi-modal distribution learning and stochastic mode alignment."""

from drsl.adaptation.drsl.regularizer import DRSLRegularizer, downsample_labels

__all__ = ["DRSLRegularizer", "downsample_labels"]
