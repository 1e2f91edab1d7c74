"""Errors that reach the user as one line (``drsl CMD: error: ...``, exit status 2).

They live in this light module, free of torch, so that the command line can name them without
importing the heavy modules that raise them (``drsl --help`` stays fast).
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the file and the reason."""


class WeightsError(ValueError):
    """Weights that do not fit the model, with the file and the mismatching keys named."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the iteration and every loss term."""


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (another run in it, in use by another
    process, nothing to resume...); the message says what to do instead."""
