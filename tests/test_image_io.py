"""Images are read as a viewer shows them (every PIL mode and bit depth, EXIF orientation) or
refused by name; very large images are segmented in tiles within a memory bound."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from drsl.api import SegmentationModel
from drsl.config import load_config
from drsl.configs import resolve_config_path
from drsl.data.classes import bind_class_set
from drsl.data.errors import DataError
from drsl.data.io import image_size, read_image
from drsl.evaluation.inference import in_tiles
from drsl.training import build_module

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
WIDE = RNG.integers(0, 65536, (6, 5), dtype=np.uint16)


def as_grey_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def palette_image() -> tuple[Image.Image, np.ndarray]:
    colours = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    image = Image.fromarray(GREY, mode="L").convert("P")
    image.putpalette(colours.ravel().tolist())
    return image, colours[GREY]


def cases() -> dict[str, tuple[Image.Image, str, np.ndarray]]:
    """Mode -> (image, file suffix, the RGB array a viewer shows, computed without PIL's conversions)."""
    palette, palette_rgb = palette_image()
    transparent = palette.copy()
    transparent.info["transparency"] = int(GREY[0, 0])
    shown = palette_rgb.copy()
    shown[GREY == GREY[0, 0]] = 0
    over_black = (RGB.astype(np.uint16) * ALPHA[:, :, None] // 255).astype(np.uint8)
    grey_over_black = (GREY.astype(np.uint16) * ALPHA // 255).astype(np.uint8)
    cmyk = np.concatenate([RGB, np.zeros((6, 5, 1), np.uint8)], axis=2)
    return {
        "L": (Image.fromarray(GREY, mode="L"), ".png", as_grey_rgb(GREY)),
        "1": (Image.fromarray(GREY > 127).convert("1"), ".png", as_grey_rgb(np.where(GREY > 127, 255, 0).astype(np.uint8))),
        "P": (palette, ".png", palette_rgb),
        "P+transparency": (transparent, ".png", shown),
        "LA": (Image.fromarray(np.stack([GREY, ALPHA], 2), mode="LA"), ".png", as_grey_rgb(grey_over_black)),
        "RGBA": (Image.fromarray(np.concatenate([RGB, ALPHA[:, :, None]], 2), mode="RGBA"), ".png", over_black),
        "I;16": (Image.fromarray(WIDE), ".png", as_grey_rgb((WIDE >> 8).astype(np.uint8))),
        "I": (Image.fromarray(WIDE.astype(np.int32), mode="I"), ".tif", as_grey_rgb((WIDE >> 8).astype(np.uint8))),
        "CMYK": (Image.fromarray(cmyk, mode="CMYK"), ".tif", 255 - RGB),
    }


@pytest.mark.parametrize("mode", list(cases()))
def test_every_mode_reads_as_a_viewer_shows_it(mode: str, tmp_path: Path) -> None:
    image, suffix, expected = cases()[mode]
    path = tmp_path / f"image{suffix}"
    image.save(path)
    assert np.array_equal(read_image(path), expected)


def test_sixteen_bit_colour_png_keeps_the_high_byte(tmp_path: Path) -> None:
    rgb16 = RNG.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    path = tmp_path / "colour16.png"
    cv2.imwrite(str(path), rgb16[:, :, ::-1])  # OpenCV writes BGR
    assert np.array_equal(read_image(path), (rgb16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("array, mode, problem", [
    (np.full((4, 4), 0.5, np.float32), "F", "floating-point"),
    (np.full((4, 4), 70000, np.int32), "I", "outside 0..65535"),
])
def test_images_without_one_way_to_show_them_are_refused(
    array: np.ndarray, mode: str, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "odd.tif"
    Image.fromarray(array, mode=mode).save(path)
    with pytest.raises(DataError, match=problem) as caught:
        read_image(path)
    assert caught.value.path == str(path)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show the pixels rotated 90 degrees clockwise
    Image.fromarray(RGB).save(path, exif=exif, quality=95)
    with Image.open(path) as raw:
        stored = np.asarray(raw.convert("RGB"))
    assert np.array_equal(read_image(path), np.rot90(stored, k=-1))
    assert image_size(path) == (6, 5)  # (width, height) as shown


def test_tiles_equal_the_whole_for_local_functions() -> None:
    images = torch.rand(2, 3, 53, 71)
    calls: list[int] = []

    def local(x: torch.Tensor) -> torch.Tensor:  # each output pixel sees 2 pixels around it
        calls.append(x.shape[-2] * x.shape[-1])
        return F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)

    whole = local(images)
    tiled = in_tiles(local, images, max_pixels=20 * 20, margin=2)
    assert torch.allclose(tiled, whole, atol=1e-6)
    assert max(calls[1:]) <= 20 * 20 and len(calls) > 10


def test_predict_on_a_large_image_stays_within_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(resolve_config_path("synth/source_only"), ["model.light_width=1", "model.pretrained=null"])
    model = SegmentationModel(build_module(config), config, bind_class_set(config), torch.device("cpu"))
    monkeypatch.setattr("drsl.api.TILE_MARGIN", 8)
    seen: list[int] = []
    model.module.segmentor.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].shape[-2] * inputs[0].shape[-1]))
    image = RNG.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    labels, confidence = model.predict(image, max_pixels=48 * 48)
    assert labels.shape == confidence.shape == (90, 130) and labels.dtype == np.uint8
    assert len(seen) > 4 and max(seen) <= 48 * 48
    whole_confidence, whole_labels = model.probabilities(image)[0].max(0)
    whole = model.predict(image, max_pixels=90 * 130)
    np.testing.assert_array_equal(whole.labels, whole_labels.to(torch.uint8).numpy())
    np.testing.assert_allclose(whole.confidence, whole_confidence.numpy(), rtol=1e-5, atol=1e-6)
