"""Reading initial weights files and loading them strictly; the torchvision-style key adapter.

Files are read with ``torch.load(weights_only=True)`` or safetensors: never unpickled. Nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from drsl.engine.checkpoint import load_failure
from drsl.errors import WeightsError, listed
from drsl.fileio import not_a_file

#: Prefixes that public checkpoints put in front of encoder keys.
_ENCODER_PREFIXES = ("module.", "Scale.", "backbone.", "encoder.", "model.")
#: Keys that are classifiers of the pre-training task, never part of our encoder.
_DROPPED_PREFIXES = ("fc.", "layer5.", "classifier.", "aux_classifier.")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a tensor dict from .safetensors or a torch file (weights_only), unwrapping 'state_dict'."""
    path = Path(path)
    if (reason := not_a_file(path, "weights file")) is not None:
        raise WeightsError(f"weights file {path} {reason}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which and why, not a deep traceback
        raise WeightsError(f"cannot read weights file {path}: {load_failure(path, exc)}") from None
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in data.items()):
        raise WeightsError(f"weights file {path} does not hold a dict of tensors (parameter names -> tensors)")
    return data


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _ENCODER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _encoder_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    stripped = {_strip(k): v for k, v in state.items()}
    return {k: v for k, v in stripped.items() if not k.startswith(_DROPPED_PREFIXES)}


def _is_deeplab_init(state: dict[str, Tensor]) -> bool:
    return any(f".{k}".find(".Scale.") >= 0 for k in state)


def torchvision_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Encoder weights from a torchvision-style ImageNet file (prefixes and classifiers removed)."""
    if _is_deeplab_init(state):
        raise WeightsError(
            "is a DeepLab-v2 init file ('Scale.' keys, Caffe conventions): use model.backbone=resnet101_deeplab"
        )
    return _encoder_keys(state)


def deeplab_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Encoder weights from the DeepLab-v2 init (``Scale.`` prefix, ``layer5`` classifier dropped)."""
    if not _is_deeplab_init(state):
        raise WeightsError(
            "has no 'Scale.' keys of the DeepLab-v2 init (DeepLab_resnet_pretrained_init-f81d91e8.pth); "
            "a torchvision ImageNet file goes with model.backbone=resnet101"
        )
    return _encoder_keys(state)


def load_matching(module: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load ``state`` into ``module`` strictly, raising WeightsError that lists every mismatch.

    BatchNorm ``num_batches_tracked`` buffers absent from files saved before PyTorch 0.4.1 (the 2017
    torchvision ResNets, the DeepLab-v2 init) are filled with zeros.
    """
    own = module.state_dict()
    state = {**{k: torch.zeros_like(v) for k, v in own.items() if k.endswith(".num_batches_tracked")}, **state}
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
                parts.append(f"{title}: {listed(items, 5)}")
        raise WeightsError(
            f"weights in {source} do not fit the {type(module).__name__}: " + "; ".join(parts)
        )
    module.load_state_dict(state)


def load_encoder_weights(
    encoder: nn.Module, path: str | Path, adapt: Callable[[dict[str, Tensor]], dict[str, Tensor]]
) -> None:
    """Initialise an encoder from a weights file, ``adapt`` mapping its keys onto the encoder's."""
    state = read_state_dict(path)
    try:
        state = adapt(state)
    except WeightsError as exc:
        raise WeightsError(f"weights file {path} {exc}") from None
    load_matching(encoder, state, str(path))

