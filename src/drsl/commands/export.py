"""``drsl export``: a slim inference checkpoint (weights, config, class set), or an ONNX graph when
the output ends in ``.onnx`` (see :mod:`drsl.onnx_export`)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from drsl.commands.help import add_device


def megabytes(path: Path) -> str:
    """The size of ``path`` in MB, for messages."""
    return f"{path.stat().st_size / 1e6:.2f} MB"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``drsl export``."""
    parser = subparsers.add_parser(
        "export", help="write a slim inference checkpoint, or an ONNX model (OUT ending in .onnx)",
        description="OUT.pt: the weights, config and class set only (no optimizer, EMA teacher or RNG "
        "state). OUT.onnx: an ONNX graph (pip install 'drsl[deploy]'): float32 RGB NCHW input with pixel "
        "values 0..255, any batch and image size, normalisation inside; logits at the input size out; "
        "the class names and palette in its metadata. With onnxruntime installed, the export is checked "
        "against PyTorch on a random image and the difference printed.",
    )
    parser.add_argument("checkpoint", help="a drsl checkpoint (training checkpoint or export)")
    parser.add_argument("out", help="path of the export: .onnx for ONNX, else a slim checkpoint")
    add_device(parser, "for loading the checkpoint; ONNX export runs on the CPU")


def run(args: argparse.Namespace) -> int:
    """Export and print the size of the result (and, for ONNX, its agreement with PyTorch)."""
    from drsl.engine.outputs import check_output

    source, out = Path(args.checkpoint), Path(args.out)
    check_output(out, [("the checkpoint", source)])
    if out.suffix.lower() == ".onnx":
        return _run_onnx(source, out)
    from drsl.api import export_checkpoint

    exported = export_checkpoint(source, out)
    ratio = exported.stat().st_size / source.stat().st_size
    print(f"exported {source} ({megabytes(source)}) to {exported} ({megabytes(exported)}, {ratio:.0%} of the original)")
    return 0


def _run_onnx(source: Path, out: Path) -> int:
    import numpy as np

    from drsl.api import load_model
    from drsl.onnx_export import compare, export_onnx

    model = load_model(source, device="cpu")
    export_onnx(model, out)
    print(f"exported {source} to {out} ({megabytes(out)}, {model.classes.num_classes} classes of {model.classes.name})")
    if importlib.util.find_spec("onnxruntime") is not None:
        images = np.random.default_rng(0).uniform(0, 255, (1, 3, 80, 112)).astype(np.float32)
        difference, disagree = compare(model, out, images)
        print(f"onnxruntime vs PyTorch on a random 80x112 image: max |logit difference| {difference:.2e}, "
              f"argmax differs on {100 * disagree:.3f}% of pixels")
    return 0
