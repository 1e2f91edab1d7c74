"""Test set-up: the fixture writers in tests/ are importable, and torch uses one thread."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)
