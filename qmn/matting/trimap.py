"""Trimap from a binary mask: erode for sure-foreground, dilate for sure-background, the band between is unknown.

Why relative width: a fixed band is too wide for small objects and too thin for large ones, so the default
half-width is a fraction of sqrt(object area) (min 3 px); the app's slider passes `width` explicitly.
"""
from __future__ import annotations

import cv2
import numpy as np

TRIMAP_BACKGROUND, TRIMAP_UNKNOWN, TRIMAP_FOREGROUND = 0, 128, 255
WIDTH_FRACTION = 0.03  # default band half-width as a fraction of sqrt(mask area)
MIN_WIDTH = 3


def default_trimap_width(mask: np.ndarray) -> int:
    """Band half-width in pixels for `mask`: WIDTH_FRACTION * sqrt(area), at least MIN_WIDTH."""
    return max(MIN_WIDTH, int(round(WIDTH_FRACTION * float(np.sqrt(np.count_nonzero(mask))))))


def make_trimap(mask: np.ndarray, width: int | None = None) -> np.ndarray:
    """Trimap uint8 (H, W) with values 0 / 128 / 255 from a mask (H, W) (bool, or numbers > 0.5 = object).

    Pixels within `width` px of the mask boundary (on either side) are unknown (128).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"make_trimap: mask must be 2-D (H, W), got shape {mask.shape}")
    binary = (mask > 0.5).astype(np.uint8) if mask.dtype != bool else mask.astype(np.uint8)
    if width is None:
        width = default_trimap_width(binary)
    width = int(width)
    if width < 1:
        raise ValueError(f"make_trimap: trimap width must be >= 1 px, got {width}")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    sure_fg = cv2.erode(binary, kernel, borderType=cv2.BORDER_REPLICATE) > 0
    maybe_fg = cv2.dilate(binary, kernel, borderType=cv2.BORDER_REPLICATE) > 0
    trimap = np.full(binary.shape, TRIMAP_UNKNOWN, np.uint8)
    trimap[sure_fg] = TRIMAP_FOREGROUND
    trimap[~maybe_fg] = TRIMAP_BACKGROUND
    return trimap


def trimap_regions(trimap: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(background, unknown, foreground) bool maps (H, W) of a trimap; any grey between 0 and 255 is unknown."""
    trimap = np.asarray(trimap)
    if trimap.ndim == 3:
        trimap = trimap[..., 0]
    background = trimap <= 10
    foreground = trimap >= 245
    return background, ~(background | foreground), foreground


def trimap_onehot(trimap: np.ndarray) -> np.ndarray:
    """Network encoding of a trimap (H, W): float32 (3, H, W) = (background, unknown, foreground) indicators."""
    return np.stack(trimap_regions(trimap)).astype(np.float32)
