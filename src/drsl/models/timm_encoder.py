"""Any timm encoder with ``features_only`` support as a drsl encoder (``model.backbone: timm/NAME``).

The model is built with random weights (``pretrained=False``: nothing is downloaded), its input
normalisation comes from its pretrained config (timm's data config for NAME, a weights tag such as
``resnet18.a1_in1k`` included), and its maps and stages from its ``feature_info``. Initial weights
come from ``model.pretrained``: a file saved from the timm model (the whole classifier or the
feature extractor), whose classifier is dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import timm
import torch
from torch import Tensor, nn

from drsl.config import ConfigError
from drsl.errors import shorten
from drsl.models.interfaces import Encoder, InputNorm

#: Maps finer than this stride are computed but not handed to the decoder (the stride-2 stem output).
MIN_STRIDE = 4


def check_model_name(name: str) -> None:
    """A ConfigError unless timm knows the model ``name``."""
    if not name or not timm.is_model(name):
        raise ConfigError(
            f"config key 'model.backbone': timm has no model {shorten(name)} "
            "(timm.list_models() lists them; write model.backbone: timm/NAME)"
        )


def create_features(name: str, output_stride: int | None = None) -> nn.Module:
    """timm's feature extractor of ``name`` (random weights), asked for ``output_stride`` when
    given and the model takes one (a model that does not is built at its own)."""
    try:
        if output_stride is not None:
            try:
                return timm.create_model(name, pretrained=False, features_only=True, output_stride=output_stride)
            except TypeError as exc:
                if "output_stride" not in str(exc):
                    raise
        return timm.create_model(name, pretrained=False, features_only=True)
    except (RuntimeError, AssertionError, ValueError) as exc:  # no feature maps, or not at that stride
        at = "" if output_stride is None else f" at output stride {output_stride}"
        raise ConfigError(
            f"config key 'model.backbone': timm model {name} gives no feature maps{at} ({type(exc).__name__}: {exc})"
        ) from None


class TimmEncoder(Encoder):
    """A timm feature extractor; maps at stride 4 and coarser, shallow to deep, the deepest at
    ``output_stride`` (deeper stages dilated where the model supports it)."""

    def __init__(self, name: str, output_stride: int) -> None:
        super().__init__()
        self.body = create_features(name, output_stride)
        info = self.body.feature_info
        if info.reduction()[-1] != output_stride:
            raise ConfigError(
                f"config key 'model.output_stride': timm model {name} has output stride {info.reduction()[-1]} "
                f"and cannot change it (set model.output_stride={info.reduction()[-1]})"
            )
        self.keep = [i for i, stride in enumerate(info.reduction()) if stride >= MIN_STRIDE]
        self.out_channels = [info.channels()[i] for i in self.keep]
        self.strides = [info.reduction()[i] for i in self.keep]
        data = timm.data.resolve_model_data_config(self.body)
        self.input_norm = InputNorm(mean=tuple(data["mean"]), std=tuple(data["std"]))

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = self.body(x)
        return [maps[i] for i in self.keep]

    def stage_modules(self) -> list[list[nn.Module]]:
        """The feature extractor's top-level modules, split after each kept map's module."""
        returned = getattr(self.body, "return_layers", None)
        if returned is None:  # a hook- or getter-based extractor has no module per map
            return super().stage_modules()
        ends = [name for name, index in returned.items() if int(index) in self.keep]
        stages: list[list[nn.Module]] = [[]]
        for name, module in self.body.named_children():
            if len(stages) > len(ends):
                break
            stages[-1].append(module)
            if name == ends[len(stages) - 1]:
                stages.append([])
        return stages[: len(ends)]


def timm_weights(name: str) -> Callable[[dict[str, Tensor]], dict[str, Tensor]]:
    """The weights adapter of timm model ``name``: a state dict saved from the timm model (its
    classifier or its feature extractor) -> :class:`TimmEncoder` keys. The model's keys that the
    feature extractor lacks (the classifier) are dropped; any other key stays, to be reported."""

    def adapt(state: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.device("meta"):
            own = set(create_features(name).state_dict())
            whole = set(timm.create_model(name, pretrained=False).state_dict())
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            top, _, rest = key.partition(".")
            # feature extractors flatten top-level Sequentials (stages.0 -> stages_0) or wrap the model
            mine = next((c for c in (key, f"{top}_{rest}", f"model.{key}") if c in own), None)
            if mine is not None or key not in whole:
                out[f"body.{mine or key}"] = value
        return out

    return adapt
