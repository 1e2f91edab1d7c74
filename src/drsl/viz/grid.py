"""Labelled image grids: captioned tiles in rows, drawn with Pillow (panels, prediction sheets)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (250, 250, 250)
TEXT = (30, 30, 30)
MARGIN = 6
MIN_TILE_HEIGHT = 96


class Tile(NamedTuple):
    """One captioned cell of a grid: an HxWx3 uint8 image; ``smooth`` for photos (bilinear scaling)."""

    caption: str
    image: np.ndarray
    smooth: bool = False


def font(size: int = 14) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at ``size`` pixels."""
    return ImageFont.load_default(size=size)


def _scaled(tile: Tile, height: int) -> Image.Image:
    image = Image.fromarray(np.ascontiguousarray(tile.image, dtype=np.uint8)).convert("RGB")
    width = max(1, round(image.width * height / image.height))
    resample = Image.Resampling.BILINEAR if tile.smooth else Image.Resampling.NEAREST
    return image.resize((width, height), resample)


def labelled_grid(rows: Sequence[Sequence[Tile]], tile_height: int | None = None) -> np.ndarray:
    """An HxWx3 uint8 grid of captioned tiles, one list per row (rows may be shorter than others).

    Every tile is scaled to ``tile_height`` (default: the tallest tile, at least 96 pixels),
    keeping its aspect ratio; columns take the width of their widest tile. Captions grow with
    the tiles.
    """
    if not rows or not any(rows):
        raise ValueError("labelled_grid needs at least one tile")
    height = tile_height or max(MIN_TILE_HEIGHT, *(t.image.shape[0] for row in rows for t in row))
    font_size = max(13, height // 10)
    scaled = [[_scaled(tile, height) for tile in row] for row in rows]
    columns = max(len(row) for row in rows)
    widths = [max((row[c].width for row in scaled if c < len(row)), default=0) for c in range(columns)]
    text_font = font(font_size)
    band = font_size + 6
    size = (sum(widths) + MARGIN * (columns + 1), (height + band + MARGIN) * len(rows) + MARGIN)
    canvas = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for r, (row, images) in enumerate(zip(rows, scaled)):
        top = MARGIN + r * (height + band + MARGIN)
        left = MARGIN
        for c, (tile, image) in enumerate(zip(row, images)):
            x = left + (widths[c] - image.width) // 2
            draw.text((x, top + 1), tile.caption, fill=TEXT, font=text_font)
            canvas.paste(image, (x, top + band))
            left += widths[c] + MARGIN
    return np.asarray(canvas)
