"""Test set-up: the fixture writers in tests/ are importable, and torch uses one thread."""

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)


@pytest.fixture
def clean_registries() -> Iterator[None]:
    """The registries as they were before the test, and the modules it imported from temporary
    folders forgotten: names that user code registered in a test do not leak into the next one."""
    from drsl.data.classes import CLASS_SETS
    from drsl.data.registry import LAYOUTS
    from drsl.models.registry import BACKBONES, DECODERS

    registries = [BACKBONES, DECODERS, LAYOUTS, CLASS_SETS]
    saved, modules = [dict(r) for r in registries], set(sys.modules)
    yield
    for registry, entries in zip(registries, saved):
        registry.clear()
        registry.update(entries)
    temporary = tempfile.gettempdir()
    for name in set(sys.modules) - modules:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(temporary):
            del sys.modules[name]
