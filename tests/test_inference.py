"""Whole/sliding-window inference, flip and multi-scale averaging, resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from drsl.config import EvalConfig
from drsl.evaluation.inference import predict_labels, predict_probs, upsample_argmax, window_starts

WEIGHTS = torch.tensor([[4.0, -2.0, 1.0], [-3.0, 5.0, 0.5], [0.0, 1.0, -4.0], [2.0, 2.0, 2.0]])


def colour_probs(x: torch.Tensor) -> torch.Tensor:
    """A per-pixel function of the colour: translation- and flip-equivariant."""
    return torch.einsum("kc,bchw->bkhw", WEIGHTS, x).softmax(dim=1)


def column_probs(x: torch.Tensor) -> torch.Tensor:
    """Depends on the column index too, so horizontal flipping changes it."""
    ramp = torch.linspace(-3.0, 3.0, x.shape[-1]).expand(x.shape[0], 1, *x.shape[-2:])
    colour = torch.einsum("c,bchw->bhw", WEIGHTS[0], x)[:, None]
    return torch.cat([ramp, -ramp, colour], dim=1).softmax(dim=1)


class Recorder:
    """:func:`colour_probs` that records the input sizes it was called with."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[-2:]))
        return colour_probs(x)


def images(batch: int = 2, height: int = 37, width: int = 53, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 20), st.data())
def test_windows_cover_every_pixel(length: int, crop: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, crop))
    starts = window_starts(length, crop, stride)
    covered = np.zeros(max(length, crop), dtype=bool)
    for start in starts:
        covered[start : start + crop] = True
        assert start + crop <= max(length, crop)
    assert covered[:length].all()
    assert starts == sorted(set(starts))


def test_window_starts_rejects_gaps() -> None:
    with pytest.raises(ValueError):
        window_starts(100, 10, 11)


@pytest.mark.parametrize(
    ("crop", "stride"), [([16, 16], [10, 12]), ([37, 53], [37, 53]), ([64, 80], [32, 40])]
)
def test_slide_equals_whole_for_translation_equivariant_fn(
    crop: list[int], stride: list[int]
) -> None:
    x = images()
    whole = predict_probs(colour_probs, x, EvalConfig(mode="whole"))
    slide = predict_probs(colour_probs, x, EvalConfig(mode="slide", crop_size=crop, stride=stride))
    assert slide.shape == whole.shape == (2, 4, 37, 53)
    torch.testing.assert_close(slide, whole)


def test_slide_calls_every_window_and_covers_every_pixel() -> None:
    calls: list[tuple[int, ...]] = []

    def ones(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape[-2:]))
        return torch.ones(x.shape[0], 2, *x.shape[-2:])

    cfg = EvalConfig(mode="slide", crop_size=[16, 20], stride=[10, 15])
    probs = predict_probs(ones, images(), cfg)
    assert len(calls) == len(window_starts(37, 16, 10)) * len(window_starts(53, 20, 15))
    assert set(calls) == {(16, 20)}
    torch.testing.assert_close(probs, torch.ones_like(probs))  # a zero count would give inf/nan


def test_slide_with_low_resolution_output() -> None:
    """A stride-4 head: window outputs are upsampled to the crop before accumulation."""

    def coarse(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(colour_probs(x), 4, ceil_mode=True)

    cfg = EvalConfig(mode="slide", crop_size=[16, 32], stride=[8, 16])
    probs = predict_probs(coarse, images(), cfg)
    assert probs.shape == (2, 4, 37, 53)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 37, 53))


def test_flip_of_symmetric_fn_changes_nothing() -> None:
    x = images()
    plain = predict_probs(colour_probs, x, EvalConfig())
    flipped = predict_probs(colour_probs, x, EvalConfig(flip=True))
    torch.testing.assert_close(flipped, plain)


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_flip_tta_averages_asymmetric_fn(mode: str) -> None:
    x = images()
    cfg = EvalConfig(mode=mode, crop_size=[16, 24], stride=[8, 12])
    plain = predict_probs(column_probs, x, cfg)
    expected = (plain + predict_probs(column_probs, x.flip(-1), cfg).flip(-1)) / 2
    cfg.flip = True
    got = predict_probs(column_probs, x, cfg)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, plain)
    if mode == "whole":
        torch.testing.assert_close(got, (column_probs(x) + column_probs(x.flip(-1)).flip(-1)) / 2)


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_multi_scale_shapes_and_average(mode: str) -> None:
    record = Recorder()
    x = torch.full((1, 3, 40, 60), 0.5)  # constant image: every scale gives the same probs
    cfg = EvalConfig(mode=mode, scales=[0.5, 1.0, 1.5], crop_size=[32, 32], stride=[16, 16])
    probs = predict_probs(record, x, cfg)
    assert probs.shape == (1, 4, 40, 60)
    torch.testing.assert_close(probs, colour_probs(x))
    if mode == "whole":
        assert record.seen == [(20, 30), (40, 60), (60, 90)]


def test_multi_scale_averages_upsampled_maps() -> None:
    x = images()
    cfg = EvalConfig(scales=[0.5, 1.0])  # 37 x 53 at scale 0.5: 18.5 x 26.5 rounds up
    half = torch.nn.functional.interpolate(x, size=(19, 27), mode="bilinear", align_corners=False)
    half_probs = torch.nn.functional.interpolate(
        colour_probs(half), size=(37, 53), mode="bilinear", align_corners=False
    )
    expected = (half_probs + colour_probs(x)) / 2
    torch.testing.assert_close(predict_probs(colour_probs, x, cfg), expected)


def test_resize_then_upsample_to_input_or_out_size() -> None:
    record = Recorder()
    x = images(height=30, width=50)
    cfg = EvalConfig(resize=[24, 40])
    assert predict_probs(record, x, cfg).shape == (2, 4, 30, 50)
    assert predict_probs(record, x, cfg, out_size=(60, 100)).shape == (2, 4, 60, 100)
    assert record.seen == [(24, 40), (24, 40)]
    constant = torch.full((1, 3, 30, 50), 0.25)
    torch.testing.assert_close(predict_probs(colour_probs, constant, cfg), colour_probs(constant))


def test_image_smaller_than_crop_is_padded() -> None:
    record = Recorder()
    x = images(height=20, width=30)
    cfg = EvalConfig(mode="slide", crop_size=[32, 24], stride=[16, 12])
    probs = predict_probs(record, x, cfg)
    assert set(record.seen) == {(32, 24)}
    torch.testing.assert_close(probs, colour_probs(x))


def test_predict_labels_is_max_and_argmax() -> None:
    x = images()
    cfg = EvalConfig(flip=True, scales=[0.75, 1.0])
    probs = predict_probs(column_probs, x, cfg)
    confidence, labels = predict_labels(column_probs, x, cfg, out_size=(37, 53))
    assert labels.dtype == torch.uint8 and labels.shape == (2, 37, 53)
    torch.testing.assert_close(confidence, probs.max(1).values)
    # Flip averaging makes the ramp classes tie exactly; float rounding decides those pixels.
    top2 = probs.topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 1e-5
    assert clear.float().mean() > 0.3
    assert torch.equal(labels.long()[clear], probs.argmax(1)[clear])


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_banded_upsampling_equals_full_upsampling(mode: str) -> None:
    # Output 4x the input in both directions, several passes; bands of one row up to all rows.
    x = images(3, 20, 28, seed=1)
    cfg = EvalConfig(mode=mode, flip=True, scales=[0.5, 1.0], crop_size=[12, 16], stride=[8, 10])
    probs = predict_probs(colour_probs, x, cfg, out_size=(80, 112))
    expected_confidence, expected = probs.max(1)
    for band_bytes in (1, 3 * 4 * 112 * 4 * 7, 10**9):
        confidence, labels = predict_labels(colour_probs, x, cfg, (80, 112), band_bytes)
        torch.testing.assert_close(confidence, expected_confidence, atol=1e-6, rtol=1e-6)
        assert torch.equal(labels.long(), expected)


def test_upsampling_rows_are_those_of_interpolate() -> None:
    # Non-integer ratios both ways (upsampling and downsampling): the same weights as F.interpolate.
    probs = torch.rand(1, 3, 7, 9, generator=torch.Generator().manual_seed(2)).softmax(1)
    for size in ((23, 31), (5, 4), (7, 9)):
        full = torch.nn.functional.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        confidence, labels = upsample_argmax([probs], size, band_bytes=1)
        torch.testing.assert_close(confidence, full.max(1).values, atol=1e-6, rtol=1e-6)
        assert torch.equal(labels.long(), full.argmax(1))


def test_runs_under_inference_mode_and_checks_output() -> None:
    probs = predict_probs(colour_probs, images(), EvalConfig())
    assert probs.is_inference()
    with pytest.raises(ValueError):
        predict_probs(lambda x: x[0], images(), EvalConfig())
