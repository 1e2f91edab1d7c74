"""ONNX export: onnxruntime gives PyTorch's logits (identical argmax) at any batch and image size,
and the class set travels in the model's metadata. Skipped when onnx/onnxruntime are absent."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from drsl.api import load_model  # noqa: E402
from drsl.commands import export  # noqa: E402
from drsl.onnx_export import compare, onnx_logits, torch_logits  # noqa: E402
from test_predict import train_tiny_runs  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = train_tiny_runs(root)["drsl"] / "checkpoints" / "latest.pt"
    parser = argparse.ArgumentParser()
    export.add_parser(parser.add_subparsers())
    assert export.run(parser.parse_args(["export", str(checkpoint), str(root / "model.onnx")])) == 0
    return checkpoint, root / "model.onnx"


@pytest.mark.parametrize("shape", [(1, 3, 40, 56), (3, 3, 33, 47), (2, 3, 64, 32)])
def test_onnxruntime_matches_pytorch(exported: tuple[Path, Path], shape: tuple[int, ...], capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint, path = exported
    model = load_model(checkpoint, device="cpu")
    images = np.random.default_rng(sum(shape)).uniform(0, 255, shape).astype(np.float32)
    ours, theirs = torch_logits(model, images), onnx_logits(path, images)
    assert theirs.shape == (shape[0], 19, *shape[2:])
    difference, disagree = compare(model, path, images)
    with capsys.disabled():
        print(f"\nONNX vs PyTorch on {shape}: max |logit difference| {difference:.2e}")
    assert difference < 1e-4 and disagree == 0.0
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    # The graph segments raw pixels like the Python API does.
    image = images[0].transpose(1, 2, 0).round().astype(np.uint8)
    np.testing.assert_array_equal(onnx_logits(path, image.transpose(2, 0, 1)[None].astype(np.float32)).argmax(1)[0], model.segment(image))


def test_the_class_set_travels_in_the_metadata(exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    checkpoint, path = exported
    meta = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    classes = load_model(checkpoint, device="cpu").classes
    assert json.loads(meta["drsl.class_names"]) == list(classes.names)
    assert json.loads(meta["drsl.palette"])[13] == [0, 0, 142]
    assert json.loads(meta["drsl.classes"])["name"] == "cityscapes19" and "0..255" in meta["drsl.input"]
