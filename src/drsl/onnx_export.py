"""ONNX export of a trained segmentor, for deployment without drsl or PyTorch.

The graph takes float32 RGB images, NCHW, with raw pixel values 0..255, any batch size and image
size; the scaling and normalisation the encoder expects happen inside it. It returns class logits
(N, C, H, W) at the input resolution (bilinear upsampling in the graph): ``argmax(1)`` is the label
map. The class set (names, colours, mappings) and the palette travel in the model's metadata
(``drsl.classes``, ``drsl.class_names``, ``drsl.palette``: JSON). Needs the ``deploy`` extra
(onnx, and onnxruntime to check the result).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drsl.config import ConfigError
from drsl.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from drsl.api import SegmentationModel

OPSET = 17
INPUT, OUTPUT = "images", "logits"
INPUT_DESCRIPTION = "float32 RGB images (N, 3, H, W), pixel values 0..255"


class LogitsAtInputSize(nn.Module):
    """Raw RGB pixels in, logits at the input resolution out (the exported graph)."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, images: Tensor) -> Tensor:
        logits = self.segmentor(images / 255.0).logits
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'drsl[deploy]'") from None
    return onnx


def metadata(model: SegmentationModel) -> dict[str, str]:
    """The metadata written into the ONNX file."""
    classes = model.classes
    return {
        "drsl.classes": json.dumps(classes.to_dict()),
        "drsl.class_names": json.dumps(list(classes.names)),
        "drsl.palette": json.dumps([list(color) for color in classes.colors]),
        "drsl.input": INPUT_DESCRIPTION,
        "drsl.output": f"float32 logits (N, {classes.num_classes}, H, W) at the input size; argmax(1) = class ids",
    }


def export_onnx(model: SegmentationModel, out: str | Path, example_size: tuple[int, int] = (64, 96)) -> Path:
    """Write ``model``'s segmentor as an ONNX graph with dynamic batch and image size."""
    onnx = _onnx()
    graph = LogitsAtInputSize(model.module.segmentor).cpu().eval()
    example = torch.rand(1, 3, *example_size) * 255
    buffer = io.BytesIO()
    # The TorchScript-based exporter (dynamo=False) needs no onnxscript; torch warns that it is
    # legacy, which says nothing about this graph.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            graph, (example,), buffer, input_names=[INPUT], output_names=[OUTPUT], opset_version=OPSET,
            dynamic_axes={INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch", 2: "height", 3: "width"}},
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, proto.SerializeToString())
    return Path(out)


def onnx_logits(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Logits of an exported model run by onnxruntime on (N, 3, H, W) float32 images 0..255."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {INPUT: images.astype(np.float32)})[0]


def torch_logits(model: SegmentationModel, images: np.ndarray) -> np.ndarray:
    """The same logits from PyTorch, for comparison."""
    graph = LogitsAtInputSize(model.module.segmentor).cpu().eval()
    with torch.no_grad():
        return graph(torch.from_numpy(images.astype(np.float32))).numpy()


def compare(model: SegmentationModel, path: str | Path, images: np.ndarray) -> tuple[float, float]:
    """(largest absolute logit difference, share of pixels whose argmax differs) between
    onnxruntime and PyTorch on ``images``."""
    ours, theirs = torch_logits(model, images), onnx_logits(path, images)
    return float(np.abs(ours - theirs).max()), float((ours.argmax(1) != theirs.argmax(1)).mean())
