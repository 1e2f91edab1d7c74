"""The Python API takes paths, PIL images, numpy arrays, tensors and lists of them, and returns
one type: numpy label maps (a list for several images); bad inputs are one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drsl.api import Segmentation, SegmentationModel
from drsl.config import load_config
from drsl.configs import resolve_config_path
from drsl.data.classes import bind_class_set
from drsl.data.errors import DataError
from drsl.errors import ImageInputError
from drsl.training import build_module
from drsl.viz.overlay import label_overlay

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (30, 44, 3), dtype=np.uint8)
OTHER = RNG.integers(0, 256, (20, 36, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    config = load_config(resolve_config_path("synth/source_only"), ["model.light_width=1", "eval.batch_size=2"])
    torch.manual_seed(0)
    return SegmentationModel(build_module(config), config, bind_class_set(config), torch.device("cpu"))


def test_every_form_of_one_image_gives_the_same_label_map(model: SegmentationModel, tmp_path: Path) -> None:
    path = tmp_path / "street.png"
    Image.fromarray(IMAGE).save(path)
    expected = model.segment(IMAGE)
    assert isinstance(expected, np.ndarray) and expected.shape == (30, 44) and expected.dtype == np.uint8
    chw = torch.from_numpy(IMAGE).permute(2, 0, 1)
    for form in (path, str(path), Image.open(path), chw, chw.float() / 255):
        np.testing.assert_array_equal(model.segment(form), expected)


def test_several_images_give_a_list_in_order(model: SegmentationModel) -> None:
    singles = [model.segment(image) for image in (IMAGE, OTHER, IMAGE)]
    listed = model.segment([IMAGE, Image.fromarray(OTHER), torch.from_numpy(IMAGE).permute(2, 0, 1)])
    assert isinstance(listed, list) and len(listed) == 3
    for got, want in zip(listed, singles):
        np.testing.assert_array_equal(got, want)
    batch = torch.from_numpy(np.stack([IMAGE, IMAGE, IMAGE])).permute(0, 3, 1, 2)
    assert [labels.shape for labels in model.segment(batch)] == [(30, 44)] * 3
    assert model.segment([]) == []


def test_predict_returns_labels_and_confidence_as_segment_does(model: SegmentationModel) -> None:
    one = model.predict(IMAGE)
    assert isinstance(one, Segmentation) and one.confidence.dtype == np.float32
    assert one.confidence.shape == (30, 44) and 0 < one.confidence.min() and one.confidence.max() <= 1
    np.testing.assert_array_equal(one.labels, model.segment(IMAGE))
    several = model.predict([IMAGE, OTHER])
    assert [p.labels.shape for p in several] == [(30, 44), (20, 36)]
    assert model.probabilities([IMAGE, IMAGE]).shape == (2, model.classes.num_classes, 30, 44)


def test_overlay_blends_the_class_colours_with_the_image(model: SegmentationModel) -> None:
    blended = model.overlay(IMAGE)
    assert blended.shape == IMAGE.shape and blended.dtype == np.uint8
    np.testing.assert_array_equal(blended, label_overlay(IMAGE, model.segment(IMAGE), model.classes))
    np.testing.assert_array_equal(model.overlay(torch.from_numpy(IMAGE).permute(2, 0, 1), alpha=0.0), IMAGE)
    with pytest.raises(ImageInputError, match="do not fit"):
        model.overlay(IMAGE, np.zeros((3, 3), dtype=np.uint8))


@pytest.mark.parametrize(("image", "message"), [
    (torch.zeros(30, 44, 3, dtype=torch.uint8), r"channels first, 3xHxW or Nx3xHxW; got shape \(30, 44, 3\)"),
    (torch.full((3, 8, 8), 200.0), r"values in \[0, 1\] \(this one spans 200 to 200\): divide by 255"),
    (torch.zeros(3, 8, 8, dtype=torch.int64), "uint8 .* or floating point"),
    (IMAGE.astype(np.float32), "HxWx3 uint8 RGB; got shape .*float32"),
    (IMAGE[:, :, 0], r"HxWx3 uint8 RGB; got shape \(30, 44\)"),
    ({"image": IMAGE}, "expected a path, a PIL image, .* got dict"),
])
def test_an_unsupported_input_is_one_clear_line(model: SegmentationModel, image: object, message: str) -> None:
    with pytest.raises(ImageInputError, match=message) as error:
        model.segment(image)  # type: ignore[arg-type]
    assert "\n" not in str(error.value)
    with pytest.raises(ImageInputError, match="image 1 of the list"):
        model.segment([IMAGE, image])  # type: ignore[list-item]


def test_a_missing_file_names_the_path(model: SegmentationModel, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.png"):
        model.segment(tmp_path / "missing.png")
