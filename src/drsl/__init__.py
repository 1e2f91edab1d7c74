"""drsl: unsupervised domain adaptation for semantic segmentation (DRSL, CBST, source-only)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drsl")  # the installed distribution's, as pyproject.toml sets it
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"
