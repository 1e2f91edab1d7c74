"""Initial weights from a user-given file: torchvision ImageNet, DeepLab init or drsl checkpoints.

Files are read with ``torch.load(weights_only=True)`` or safetensors: never unpickled. Nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from drsl.errors import WeightsError

#: Prefixes that public checkpoints put in front of encoder keys.
_ENCODER_PREFIXES = ("module.", "Scale.", "backbone.", "encoder.", "model.")
#: Keys that are classifiers of the pre-training task, never part of our encoder.
_DROPPED_PREFIXES = ("fc.", "layer5.", "classifier.", "aux_classifier.")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a tensor dict from .safetensors or a torch file (weights_only), unwrapping 'state_dict'."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which and why, not a deep traceback
        raise WeightsError(f"cannot read weights file {path}: {exc}") from None
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise WeightsError(f"weights file {path} does not hold a dict of tensors")
    return data


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _ENCODER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def torchvision_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Encoder weights from a torchvision-style state dict (prefixes and classifiers removed)."""
    stripped = {_strip(k): v for k, v in state.items()}
    return {k: v for k, v in stripped.items() if not k.startswith(_DROPPED_PREFIXES)}


def load_matching(module: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load ``state`` into ``module`` strictly, raising WeightsError that lists every mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if isinstance(own[k], Tensor) and getattr(state[k], "shape", None) != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shape)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{title}: {', '.join(items[:5])}{more}")
        raise WeightsError(
            f"weights in {source} do not fit the {type(module).__name__}: " + "; ".join(parts)
        )
    module.load_state_dict(state)


def load_encoder_weights(
    encoder: nn.Module, path: str | Path, adapt: Callable[[dict[str, Tensor]], dict[str, Tensor]]
) -> None:
    """Initialise an encoder from a weights file, ``adapt`` mapping its keys onto the encoder's."""
    load_matching(encoder, adapt(read_state_dict(path)), str(path))
