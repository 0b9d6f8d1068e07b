"""Crop the trimap's unknown band (plus context) and scale it to a working resolution; paste the result back.

Why: matting only changes the band, so solving on its bounding crop at <= `work_size` px keeps refinement
under a second on 2 CPU cores however large the photo is; known pixels are restored exactly afterwards.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from qmn.matting.trimap import TRIMAP_FOREGROUND, trimap_regions

# solver(image uint8 (h, w, 3), trimap uint8 (h, w)) -> alpha float32 (h, w) in [0, 1]
BandSolver = Callable[[np.ndarray, np.ndarray], np.ndarray]


def band_box(unknown: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the unknown pixels' bounding box grown by `margin`, clipped; None if no unknown."""
    ys = np.flatnonzero(unknown.any(axis=1))
    xs = np.flatnonzero(unknown.any(axis=0))
    if len(ys) == 0:
        return None
    h, w = unknown.shape
    return (max(0, ys[0] - margin), min(h, ys[-1] + 1 + margin), max(0, xs[0] - margin), min(w, xs[-1] + 1 + margin))


def solve_in_band(image: np.ndarray, trimap: np.ndarray, solver: BandSolver, work_size: int, margin: int) -> np.ndarray:
    """Alpha float32 (H, W): `solver` on the band crop scaled to <= work_size px, known regions exactly 0 / 1."""
    _, unknown, foreground = trimap_regions(trimap)
    alpha = foreground.astype(np.float32)
    box = band_box(unknown, margin)
    if box is None:
        return alpha
    y0, y1, x0, x1 = box
    crop_image, crop_trimap = image[y0:y1, x0:x1], trimap[y0:y1, x0:x1]
    h, w = crop_trimap.shape
    scale = min(1.0, work_size / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 order (width, height)
        # a small pixel is known only if every full-size pixel under it is: the band never shrinks away
        area = cv2.resize(crop_trimap.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        small_trimap = np.where(area >= 254, TRIMAP_FOREGROUND, np.where(area <= 1, 0, 128)).astype(np.uint8)
        small_alpha = solver(cv2.resize(crop_image, size, interpolation=cv2.INTER_AREA), small_trimap)
        crop_alpha = cv2.resize(small_alpha, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        crop_alpha = solver(crop_image, crop_trimap)
    crop_unknown = unknown[y0:y1, x0:x1]
    alpha[y0:y1, x0:x1][crop_unknown] = np.clip(crop_alpha[crop_unknown], 0.0, 1.0)
    return alpha
