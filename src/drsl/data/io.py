"""Reading images and label maps; every failure becomes a :class:`DataError` naming the file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps

from drsl.data.errors import DataError
from drsl.fileio import not_a_file


def _readable_suffixes() -> tuple[str, ...]:
    """File name suffixes of the image formats PIL decodes (not the stubs that only identify a
    format, nor MPEG, of which PIL reads the header alone)."""
    Image.init()
    decodes = {
        name for name, (factory, _) in Image.OPEN.items()
        if name != "MPEG" and not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))
    }
    return tuple(sorted(suffix for suffix, name in Image.registered_extensions().items() if name in decodes))


#: Suffixes of the image files drsl reads where it searches folders for images (.png, .jpg,
#: .webp, .bmp, .tif, ...: every format PIL decodes).
IMAGE_SUFFIXES = _readable_suffixes()

#: PIL modes that hold one integer channel, and the dtype they are returned as.
_LABEL_MODES = {
    "L": np.uint8, "P": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16,
    "I": np.uint16,
}


@contextmanager
def _open(path: str | Path) -> Iterator[Image.Image]:
    """PIL-open ``path``, turning missing, truncated, corrupt or non-image files, and what is no
    file (a folder named like an image, a dangling link), into DataError."""
    if (reason := not_a_file(path, "image file", missing="file not found")) is not None:
        raise DataError(path, reason)
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


#: 16-bit greyscale modes: shown with their high byte, as viewers show 16-bit images on 8-bit screens.
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
#: EXIF orientations that rotate by 90 or 270 degrees (width and height swap).
_TRANSPOSING = (5, 6, 7, 8)
_ORIENTATION = 0x0112


def as_rgb(image: Image.Image, path: str | Path) -> np.ndarray:
    """An HxWx3 uint8 array of ``image`` as an image viewer shows it, or a DataError naming ``path``.

    The EXIF orientation is applied; 16-bit greyscale keeps its high byte (32-bit integers too,
    when their values fit 16 bits); transparent pixels are composited over black; palette, CMYK,
    YCbCr, LAB and bilevel images are converted by PIL. Floating-point images have no one way to
    be shown and are refused.
    """
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode == "F":
        raise DataError(path, "32-bit floating-point images are not supported (save it as 8- or 16-bit)")
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(path, f"{image.mode} image with values outside 0..65535 (save it as 8- or 16-bit)")
        grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        return (rgba[:, :, :3] * rgba[:, :, 3:] // 255).astype(np.uint8)
    return np.array(image if image.mode == "RGB" else image.convert("RGB"))


def read_image(path: str | Path) -> np.ndarray:
    """An HxWx3 uint8 RGB array of any image PIL reads, as a viewer shows it (:func:`as_rgb`)."""
    with _open(path) as image:
        return as_rgb(image, path)


def read_label(path: str | Path) -> np.ndarray:
    """A single-channel HxW label map as stored: uint8 (L/P modes, palette indices) or uint16."""
    with _open(path) as image:
        ImageOps.exif_transpose(image, in_place=True)
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
    if (reason := not_a_file(path, missing="file not found")) is not None:
        raise DataError(path, reason)
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(path, "OpenCV cannot read this file (not an image, corrupt or truncated)")
    if array.ndim == 3:
        array = array[:, :, -1]
    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(path, f"expected an 8- or 16-bit label image, got {array.dtype}")
    return np.ascontiguousarray(array)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as shown (EXIF orientation applied), from the header without decoding pixels."""
    with _open(path) as image:
        width, height = image.size
        # A PNG's EXIF may follow its pixels: found only by decoding them, which this must not do.
        header_exif = image.format != "PNG" or "exif" in image.info
        if header_exif and image.getexif().get(_ORIENTATION) in _TRANSPOSING:
            return height, width
        return width, height
