"""Trimap from a binary mask: erode for sure-foreground, dilate for sure-background, the band between is unknown.

Why relative width: a fixed band is too wide for small objects and too thin for large ones, so the half-width is a
fraction of sqrt(object area) (min 3 px); the app's slider passes `width` explicitly.

Why `adaptive_trimap` (the default of `qmn.matting.refine`): on real photos a wide band everywhere lets the solver
bleed across crisp edges, where the mask was already right (alphamatting.com: worse than the hard mask on 7 of 20
photos). The mask's own evidence says where it is uncertain: a ragged boundary (hair, fur: many boundary pixels per
window) or, given the model's soft mask, probabilities between `SOFT_LOW` and `SOFT_HIGH`. The band is wide
(`WIDTH_FRACTION`) around ragged parts, narrow (`NARROW_FRACTION`) around uncertain soft-mask pixels, and absent along
smooth, certain boundaries (there the hard mask was already within a pixel; measured in `bench/matting_eval.py`,
a narrow band there too made alphamatting SAD worse).
"""
from __future__ import annotations

import cv2
import numpy as np

TRIMAP_BACKGROUND, TRIMAP_UNKNOWN, TRIMAP_FOREGROUND = 0, 128, 255
WIDTH_FRACTION = 0.03  # default band half-width as a fraction of sqrt(mask area)
MIN_WIDTH = 3
NARROW_FRACTION = 0.01  # half-width around uncertain soft-mask pixels, fraction of sqrt(mask area)
RAGGED_WINDOW = 0.04  # window side (fraction of sqrt(area)) in which boundary density is measured
RAGGED_DENSITY = 3.0  # boundary pixels per window side above which it counts as ragged (a straight edge gives ~2)
SOFT_LOW, SOFT_HIGH = 0.2, 0.8  # soft-mask probabilities counted as uncertain


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


def _boundary(binary: np.ndarray) -> np.ndarray:
    """bool (H, W): mask pixels with a 4-neighbour outside the mask, and outside pixels with one inside."""
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    return (cv2.dilate(binary, cross) != cv2.erode(binary, cross))


def _grow(region: np.ndarray, width: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return cv2.dilate(region.astype(np.uint8), kernel) > 0


def adaptive_trimap(mask: np.ndarray, soft: np.ndarray | None = None) -> np.ndarray:
    """Trimap uint8 (H, W) 0 / 128 / 255 whose unknown band follows the mask's uncertainty: WIDTH_FRACTION of
    sqrt(area) (>= MIN_WIDTH px) around ragged boundary parts (boundary density > RAGGED_DENSITY per window side),
    NARROW_FRACTION around uncertain soft-mask pixels (`soft` float (H, W) in [0, 1]); no band elsewhere."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"adaptive_trimap: mask must be 2-D (H, W), got shape {mask.shape}")
    binary = (mask > 0.5).astype(np.uint8) if mask.dtype != bool else mask.astype(np.uint8)
    root = float(np.sqrt(np.count_nonzero(binary)))
    narrow = max(MIN_WIDTH, int(round(NARROW_FRACTION * root)))
    wide = max(narrow, int(round(WIDTH_FRACTION * root)))
    edge = _boundary(binary)
    side = max(5, int(round(RAGGED_WINDOW * root)) | 1)
    per_side = cv2.boxFilter(edge.astype(np.float32), -1, (side, side), normalize=True) * side
    unknown = _grow(edge & (per_side > RAGGED_DENSITY), wide)
    if soft is not None:
        soft = np.asarray(soft, np.float32)
        if soft.shape != binary.shape:
            raise ValueError(f"adaptive_trimap: soft {soft.shape} must match the mask {binary.shape}")
        unknown |= _grow((soft > SOFT_LOW) & (soft < SOFT_HIGH), narrow)
    trimap = np.where(binary > 0, TRIMAP_FOREGROUND, TRIMAP_BACKGROUND).astype(np.uint8)
    trimap[unknown] = TRIMAP_UNKNOWN
    return trimap
