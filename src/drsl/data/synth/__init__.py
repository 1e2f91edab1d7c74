"""The built-in generated benchmark: simulator-style source and camera-style target street scenes.

``generate_benchmark(out, seed=0)`` writes the source in the GTA5 layout and the target in the
Cityscapes layout (see docs/benchmark.md for what is drawn and how the domains differ).
"""

from .writer import generate_benchmark, render_sample, sample_paths

__all__ = ["generate_benchmark", "render_sample", "sample_paths"]
