"""Test-time inference: whole image or sliding window, flip and multi-scale averaging.

The model enters as ``prob_fn``: a callable from a float image batch ``(B, 3, h, w)`` in [0, 1]
to class probabilities ``(B, C, h', w')`` at any resolution (a softmaxed segmentation head, a
fused posterior...). Every probability map is resized bilinearly (``align_corners=False``) to
the output size and the maps of all (scale, flip) passes are averaged.

:func:`predict_labels` never holds the full-resolution average: it upsamples the passes in bands
of output rows (bilinear interpolation is separable: columns first at the passes' own heights,
then rows band by band, with the weights ``F.interpolate`` uses: :func:`average_rows`) and keeps
only the max and argmax of each band, so its memory stays bounded at any label size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from drsl.config import ConfigError, EvalConfig

__all__ = [
    "ProbFn", "average_rows", "in_tiles", "pass_maps", "predict_labels", "predict_probs", "row_bands",
    "upsample_argmax", "window_starts",
]

#: Bytes of full-resolution float32 probabilities held at once by :func:`upsample_argmax`.
BAND_BYTES = 64 * 2**20
#: Fewest pixels a side of an image may keep after test-time rescaling (a smaller image holds
#: too little to segment: a one-pixel image would be scored as a prediction).
MIN_SCALED_SIDE = 4

ProbFn = Callable[[torch.Tensor], torch.Tensor]


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of a (B, C, H, W) tensor (returned as is when already at ``size``)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _call(prob_fn: ProbFn, x: torch.Tensor) -> torch.Tensor:
    """``prob_fn(x)`` as float32, checked to be a (B, C, h', w') batch."""
    probs = prob_fn(x)
    if probs.ndim != 4 or probs.shape[0] != x.shape[0]:
        raise ValueError(
            f"prob_fn returned shape {tuple(probs.shape)} for an input of shape {tuple(x.shape)}; "
            "expected (B, C, h', w')"
        )
    return probs.float()


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of crops of size ``crop`` every ``stride`` covering ``0..length-1``.

    The last window is shifted back to end at the border; a length below ``crop`` gives the
    single offset 0 (the caller pads).
    """
    if crop < 1 or not 1 <= stride <= crop:
        raise ValueError(f"need crop >= 1 and 1 <= stride <= crop, got crop {crop} stride {stride}")
    if length <= crop:
        return [0]
    count = -(-(length - crop) // stride) + 1
    return [min(i * stride, length - crop) for i in range(count)]


def _slide(
    prob_fn: ProbFn, x: torch.Tensor, crop: Sequence[int], stride: Sequence[int]
) -> torch.Tensor:
    """Sliding-window probabilities at the resolution of ``x``, overlaps averaged."""
    height, width = x.shape[-2:]
    crop_h, crop_w = int(crop[0]), int(crop[1])
    rows = window_starts(height, crop_h, int(stride[0]))
    cols = window_starts(width, crop_w, int(stride[1]))
    # Zero-pad (bottom/right) an image smaller than the crop; the padding is cropped off below.
    x = F.pad(x, (0, max(crop_w - width, 0), 0, max(crop_h - height, 0)))
    total: torch.Tensor | None = None
    count = torch.zeros(x.shape[-2:], device=x.device)
    for top in rows:
        for left in cols:
            window = x[..., top : top + crop_h, left : left + crop_w]
            probs = _resize(_call(prob_fn, window), (crop_h, crop_w))
            if total is None:
                total = probs.new_zeros((x.shape[0], probs.shape[1], *x.shape[-2:]))
            total[..., top : top + crop_h, left : left + crop_w] += probs
            count[top : top + crop_h, left : left + crop_w] += 1
    assert total is not None
    return (total / count)[..., :height, :width]


def in_tiles(
    fn: Callable[..., torch.Tensor], *images: torch.Tensor, max_pixels: int, margin: int
) -> torch.Tensor:
    """``fn(*images)`` computed tile by tile, so that memory stays bounded for very large images.

    ``images`` are (B, K_i, H, W) tensors of one size; ``fn`` maps crops of them to per-pixel
    outputs (B, K, h, w) at the crop size. An image of at most ``max_pixels`` pixels is one call.
    A larger one is cut into tiles whose cores tile it, each seen with up to ``margin`` pixels of
    context on every side (cut from its result), every crop within ``max_pixels``. For an ``fn``
    whose output at a pixel depends on at most ``margin`` pixels around it, the result equals
    ``fn(*images)``; for a network it differs only where its receptive field reaches further.
    """
    height, width = images[0].shape[-2:]
    if height * width <= max_pixels:
        return fn(*images)
    core = math.isqrt(max_pixels) - 2 * margin
    if core < 1:
        raise ValueError(f"max_pixels={max_pixels} leaves no room for tiles with a margin of {margin}")
    out: torch.Tensor | None = None
    for top in range(0, height, core):
        for left in range(0, width, core):
            y0, x0 = max(top - margin, 0), max(left - margin, 0)
            y1, x1 = min(top + core + margin, height), min(left + core + margin, width)
            result = fn(*(image[..., y0:y1, x0:x1] for image in images))
            if out is None:
                out = result.new_empty((*result.shape[:2], height, width))
            bottom, right = min(top + core, height), min(left + core, width)
            out[..., top:bottom, left:right] = result[..., top - y0:bottom - y0, left - x0:right - x0]
    assert out is not None
    return out


@torch.inference_mode()
def pass_maps(prob_fn: ProbFn, images: torch.Tensor, cfg: EvalConfig) -> list[torch.Tensor]:
    """Class probabilities of every (scale, flip) pass, float32, each at the resolution
    ``prob_fn`` returns (sliding windows: of the rescaled input), flipped passes flipped back.

    Follows ``cfg``: optional ``resize`` of the input first; then, for each of ``scales`` (and
    each flip when ``flip``), the rescaled input goes through ``prob_fn`` whole or by sliding
    windows (``mode == "slide"``, ``crop_size``/``stride`` in pixels of the rescaled input).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    if not cfg.scales:
        raise ValueError("cfg.scales is empty")
    base = _resize(images.float(), cfg.resize) if cfg.resize is not None else images.float()
    base_h, base_w = base.shape[-2:]
    passes = []
    for scale in cfg.scales:
        size = (max(1, int(base_h * scale + 0.5)), max(1, int(base_w * scale + 0.5)))
        if min(size) < MIN_SCALED_SIDE:
            raise ConfigError(
                f"scale {scale:g} (eval.scales, --scales) makes a {base_h}x{base_w} image {size[0]}x{size[1]} "
                f"pixels; each side must keep at least {MIN_SCALED_SIDE}"
            )
        scaled = _resize(base, size)
        for flip in (False, True) if cfg.flip else (False,):
            x = scaled.flip(-1) if flip else scaled
            probs = _slide(prob_fn, x, cfg.crop_size, cfg.stride) if cfg.mode == "slide" else _call(prob_fn, x)
            passes.append(probs.flip(-1) if flip else probs)
    return passes


@torch.inference_mode()
def predict_probs(
    prob_fn: ProbFn,
    images: torch.Tensor,
    cfg: EvalConfig,
    out_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Averaged class probabilities (B, C, H, W) at ``out_size`` (default: the input size): the
    passes of :func:`pass_maps`, each upsampled bilinearly to the output size."""
    target = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
    passes = pass_maps(prob_fn, images, cfg)
    total = _resize(passes[0], target)
    for probs in passes[1:]:
        total = total + _resize(probs, target)
    return total / len(passes)


def _source_rows(in_size: int, out_size: int, rows: slice, device: torch.device) -> tuple[torch.Tensor, ...]:
    """For output rows ``rows``: the lower and upper input rows and the weight of the upper, as
    bilinear ``F.interpolate`` (``align_corners=False``) computes them (float32 arithmetic)."""
    out = torch.arange(rows.start, rows.stop, device=device, dtype=torch.float32)
    source = ((out + 0.5) * (in_size / out_size) - 0.5).clamp_min(0)
    low = source.long().clamp_max(in_size - 1)
    return low, (low + 1).clamp_max(in_size - 1), source - low


def average_rows(maps: Sequence[torch.Tensor], out_size: Sequence[int], rows: slice) -> torch.Tensor:
    """Rows ``rows`` of the maps' bilinear upsampling to ``out_size``, averaged: (B, C, rows, W),
    float32, on the maps' device.

    The sampling of ``F.interpolate(..., mode="bilinear", align_corners=False)`` (up to float
    rounding), separably: only the few input rows the band reads are interpolated along the width,
    then blended along the height. Full-resolution maps never exist whole, and nothing waits for
    the device (the row range comes from the sizes alone).
    """
    height, width = int(out_size[0]), int(out_size[1])
    total: torch.Tensor | None = None
    for probs in maps:
        h = probs.shape[-2]
        if rows.start == 0 and rows.stop == height:  # the whole map: F.interpolate itself
            band = _resize(probs.float(), (height, width))
        else:
            scale = h / height  # the input rows this band reads, with a margin of one either side
            top = max(0, int(max(0.0, (rows.start + 0.5) * scale - 0.5)) - 1)
            bottom = min(h, int(max(0.0, (rows.stop - 0.5) * scale - 0.5)) + 3)
            strip = _resize(probs[..., top:bottom, :].float(), (bottom - top, width))  # along W only
            low, high, weight = _source_rows(h, height, rows, probs.device)
            band = torch.lerp(strip.index_select(-2, low - top), strip.index_select(-2, high - top),
                              weight.view(-1, 1))
        total = band if total is None else total.add_(band)
    assert total is not None
    return total if len(maps) == 1 else total.div_(len(maps))


def row_bands(height: int, bytes_per_row: int, max_bytes: int) -> list[slice]:
    """Consecutive row bands covering ``0..height-1`` of at most ``max_bytes`` each (one row at least)."""
    step = max(1, max_bytes // max(1, bytes_per_row))
    return [slice(start, min(start + step, height)) for start in range(0, height, step)]


@torch.inference_mode()
def upsample_argmax(
    maps: Sequence[torch.Tensor], out_size: Sequence[int], band_bytes: int = BAND_BYTES
) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, label), each (B, H, W): max (float32) and argmax (uint8) over classes of the
    mean of ``maps`` (B, C, h_i, w_i) upsampled bilinearly to ``out_size`` = (H, W).

    Equal to the max and argmax of :func:`predict_probs` up to float rounding, computed in bands
    of output rows of about ``band_bytes`` of probabilities (:func:`average_rows`).
    """
    height, width = int(out_size[0]), int(out_size[1])
    b, c = maps[0].shape[:2]
    if c > 256:
        raise ValueError(f"{c} classes do not fit uint8 labels")
    device = maps[0].device
    confidence = torch.empty((b, height, width), device=device)
    labels = torch.empty((b, height, width), dtype=torch.uint8, device=device)
    for rows in row_bands(height, b * c * width * 4, band_bytes):
        best, index = average_rows(maps, out_size, rows).max(dim=1)
        confidence[:, rows], labels[:, rows] = best, index.to(torch.uint8)
    return confidence, labels


@torch.inference_mode()
def predict_labels(
    prob_fn: ProbFn,
    images: torch.Tensor,
    cfg: EvalConfig,
    out_size: Sequence[int] | None = None,
    band_bytes: int = BAND_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, label), each (B, H, W): max (float32) and argmax (uint8) of the averaged
    probabilities of :func:`predict_probs`, with memory bounded by :func:`upsample_argmax`."""
    target = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
    return upsample_argmax(pass_maps(prob_fn, images, cfg), target, band_bytes)
