"""Classical GrabCut (OpenCV) from an xyxy box, optionally seeded by a model's mask: the fallback the app offers
next to the model's box prompt, and the classical baseline of `bench/box_prompt.py`.

GrabCut runs on a crop of the box plus a margin of context (`CONTEXT` of the box's longer side, at least
`MIN_CONTEXT_PX`): the background colour model should describe what surrounds the object, and pixels far away
only cost time (a full 800 x 600 photo takes ~10x longer than a typical crop).
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from qmn.batching import to_rgb_uint8

CONTEXT = 0.5  # margin around the box, as a fraction of its longer side
MIN_CONTEXT_PX = 10


def _box_pixels(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """xyxy float box -> integer (x0, y0, x1, y1), x1/y1 exclusive, clipped to the image; ValueError when empty."""
    values = np.asarray(box, np.float64).reshape(-1)
    if values.shape != (4,) or not np.isfinite(values).all():
        raise ValueError(f"box must be 4 finite numbers [x1, y1, x2, y2] in pixels, got {np.asarray(box).tolist()}")
    x0, y0 = max(0, int(np.floor(values[0]))), max(0, int(np.floor(values[1])))
    x1, y1 = min(width, int(np.ceil(values[2]))), min(height, int(np.ceil(values[3])))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {values.tolist()} has no area inside the {width}x{height} image")
    return x0, y0, x1, y1


def grabcut_from_box(image: np.ndarray, box: Sequence[float], seed_mask: Optional[np.ndarray] = None,
                     iterations: int = 5) -> np.ndarray:
    """(H, W) bool mask of the object in xyxy pixel `box`. Without `seed_mask` GrabCut starts from the box (everything
    inside probably foreground); with it, pixels inside the box start as probable foreground where the seed is set and
    probable background elsewhere. Pixels outside the box are always background. Seeded (same input -> same mask).
    When GrabCut cannot run (no background around a box that fills the image, a flat box) or finds nothing, the box
    itself is returned so the user still sees a region."""
    image = to_rgb_uint8(image)
    h, w = image.shape[:2]
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if seed_mask is not None and np.shape(seed_mask) != (h, w):
        raise ValueError(f"seed_mask has shape {np.shape(seed_mask)}, expected the image's {(h, w)}")
    x0, y0, x1, y1 = _box_pixels(box, h, w)
    margin = max(MIN_CONTEXT_PX, int(round(CONTEXT * max(x1 - x0, y1 - y0))))
    cx0, cy0, cx1, cy1 = max(0, x0 - margin), max(0, y0 - margin), min(w, x1 + margin), min(h, y1 + margin)
    crop = cv2.cvtColor(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]), cv2.COLOR_RGB2BGR)
    rect = (x0 - cx0, y0 - cy0, x1 - x0, y1 - y0)  # the box in crop coordinates, (x, y, w, h)
    in_box = np.zeros(crop.shape[:2], bool)
    in_box[rect[1]:rect[1] + rect[3], rect[0]:rect[0] + rect[2]] = True

    labels = np.full(crop.shape[:2], cv2.GC_BGD, np.uint8)
    mode = cv2.GC_INIT_WITH_RECT
    if seed_mask is not None:
        seed = np.asarray(seed_mask, bool)[cy0:cy1, cx0:cx1] & in_box
        if seed.any() and not seed.all():  # GrabCut needs samples of both colour models
            labels[in_box] = cv2.GC_PR_BGD
            labels[seed] = cv2.GC_PR_FGD
            mode = cv2.GC_INIT_WITH_MASK
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(crop, labels, rect, bgd, fgd, int(iterations), mode)
        found = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    except cv2.error:  # a colour model had no samples (box = whole image, or a one-colour box)
        found = np.zeros(crop.shape[:2], bool)
    if not found.any():
        found = in_box
    out = np.zeros((h, w), bool)
    out[cy0:cy1, cx0:cx1] = found & in_box
    return out
