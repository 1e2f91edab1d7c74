"""Reading images and label maps; every failure becomes a :class:`DataError` naming the file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from drsl.data.errors import DataError

#: PIL modes that hold one integer channel, and the dtype they are returned as.
_LABEL_MODES = {
    "L": np.uint8, "P": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16,
    "I": np.uint16,
}


@contextmanager
def _open(path: str | Path) -> Iterator[Image.Image]:
    """PIL-open ``path``, turning missing, truncated, corrupt or non-image files into DataError."""
    try:
        with Image.open(path) as image:
            yield image
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except Image.DecompressionBombError as exc:
        raise DataError(path, f"image too large to decode ({exc})") from None
    except Image.UnidentifiedImageError:
        raise DataError(path, "not an image file (or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"unreadable or truncated image ({exc})") from None


def read_image(path: str | Path) -> np.ndarray:
    """An HxWx3 uint8 RGB array (any PIL-readable format is converted to RGB)."""
    with _open(path) as image:
        return np.array(image.convert("RGB"))


def read_label(path: str | Path) -> np.ndarray:
    """A single-channel HxW label map as stored: uint8 (L/P modes, palette indices) or uint16."""
    with _open(path) as image:
        if image.mode not in _LABEL_MODES:
            problem = f"expected a single-channel label image, got PIL mode {image.mode}"
            raise DataError(path, problem)
        array = np.array(image)
    if array.dtype.kind == "i":
        if array.size and (array.min() < 0 or array.max() > np.iinfo(np.uint16).max):
            raise DataError(path, "label values outside 0..65535")
    return array.astype(_LABEL_MODES[image.mode], copy=False)


def read_synthia_label(path: str | Path) -> np.ndarray:
    """The class-id channel of a SYNTHIA label PNG (16-bit, usually 3 channels), read with OpenCV.

    OpenCV returns channels as BGR, so the class id (stored in R) is the last channel.
    """
    if not Path(path).is_file():
        raise DataError(path, "file not found")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(path, "OpenCV cannot read this file (not an image, corrupt or truncated)")
    if array.ndim == 3:
        array = array[:, :, -1]
    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(path, f"expected an 8- or 16-bit label image, got {array.dtype}")
    return np.ascontiguousarray(array)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    with _open(path) as image:
        return image.size
