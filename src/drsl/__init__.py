"""drsl: unsupervised domain adaptation for semantic segmentation (DRSL, CBST, source-only)."""

__version__ = "0.1.0"
