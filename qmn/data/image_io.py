"""Image files in and out: reading user images into the one array format every part of qmn uses,
RGB uint8 (H, W, 3), and the one PNG writer every part (data writers, predict CLI, app) uses.

Public API:
    read_image(path_or_bytes, max_pixels=DEFAULT_MAX_PIXELS) -> np.ndarray uint8 (H, W, 3)
    image_size(path_or_bytes, max_pixels=DEFAULT_MAX_PIXELS) -> (H, W)   header only, no decode
    encode_png(array) -> bytes          lossless PNG of uint8 gray / RGB / RGBA or uint16 gray
    write_png(path, array) -> None      the same, written atomically (parent folders created)
    ImageError (a ValueError with a one-line message naming the file)
    IMAGE_EXTENSIONS, DEFAULT_MAX_PIXELS

Photos arrive rotated by EXIF, as grayscale, palette, RGBA, 16-bit or CMYK; all become upright
RGB uint8 here so no caller has to care. Alpha is dropped (the model takes RGB). The pixel limit
guards against decompression bombs before any pixel is decoded.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from qmn.io_utils import atomic_write_bytes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
DEFAULT_MAX_PIXELS = 1 << 27  # ~134 MP: above any camera photo, far below a decompression bomb

Source = Union[str, Path, bytes]

_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees


class ImageError(ValueError):
    """An image that cannot be read; the message is one line and names the file."""


def read_image(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode `source` (a path or the file's bytes) to an upright RGB uint8 array (H, W, 3)."""
    name = _name(source)
    with _open(source, max_pixels) as image:
        try:
            image.load()
            try:
                image = ImageOps.exif_transpose(image)
            except Exception:  # a malformed EXIF block must not lose an otherwise good image
                pass
            return _to_rgb_uint8(image)
        except ImageError:
            raise
        except Exception as error:
            raise ImageError(f"cannot decode image {name}: {_one_line(error)}") from error


def image_size(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(H, W) as `read_image` would return it (EXIF rotation applied), reading only the header."""
    with _open(source, max_pixels) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:
            orientation = 1
        return (width, height) if orientation in _SWAPS_AXES else (height, width)


def encode_png(array: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA array, or a uint16 (H, W) one
    (16-bit gray: index maps with more than 255 segments). Channels are in RGB(A) order, not OpenCV's BGR."""
    gray = array.ndim == 2
    if not ((array.dtype == np.uint8 and (gray or (array.ndim == 3 and array.shape[2] in (3, 4))))
            or (array.dtype == np.uint16 and gray)):
        raise ValueError(f"cannot write a PNG of a {array.dtype} array of shape {array.shape}: expected uint8 "
                         "(H, W), (H, W, 3) or (H, W, 4), or uint16 (H, W)")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")  # views (crops) need a contiguous copy
    return buffer.getvalue()


def write_png(path: Union[str, Path], array: np.ndarray) -> None:
    """Write `encode_png(array)` to `path` atomically; a bad array raises ValueError naming the file."""
    try:
        data = encode_png(array)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    atomic_write_bytes(path, data)


def _open(source: Source, max_pixels: int) -> Image.Image:
    name = _name(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError as error:
        raise ImageError(f"image not found: {name}") from error
    except UnidentifiedImageError as error:  # PIL's message names a BytesIO object: say what it means instead
        raise ImageError(f"cannot read image {name}: not a recognised image format (empty, truncated or corrupt)") from error
    except Image.DecompressionBombError as error:
        raise ImageError(f"image {name} is too large to decode safely: {_one_line(error)}") from error
    except Exception as error:
        raise ImageError(f"cannot read image {name}: {_one_line(error)}") from error
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageError(
            f"image {name} has {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "(a possible decompression bomb; raise max_pixels if the file is trusted)"
        )
    return image


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8. 16/32-bit gray is scaled from its bit depth, float from [0, 1]."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image).astype(np.float64)
        if image.mode == "F":
            scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        else:
            scale = 255.0 / 65535.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")  # PIL warns when converting transparent palettes directly
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _name(source: Source) -> str:
    return "<bytes>" if isinstance(source, bytes) else str(source)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
