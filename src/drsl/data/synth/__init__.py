"""The built-in generated benchmark: simulator-style source and camera-style target street scenes.

``generate_benchmark(out, seed=0, shift="hard")`` writes the source in the GTA5 layout and the
target in the Cityscapes layout (see docs/benchmark.md for what is drawn, the shift presets and
how the domains differ). The renderer is imported on first use, so the command line can list the
presets (:mod:`.shifts`) without loading it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["generate_benchmark", "render_sample", "sample_paths"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import writer

        return getattr(writer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
