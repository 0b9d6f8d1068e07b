""""Look closely": the geometry of segmenting a box / click prompt on a crop around it instead of the whole photo.

Why: the model works at `cfg.image_size` (256 px in `tiny`); a 100 px object in a 1280 px photo shrinks to 20 px
there, too small to outline. Cropping the prompt plus some context and resizing that crop to the working size gives
the object most of the model's pixels; the crop's mask is pasted back at full resolution. Pure geometry: no model.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from qmn.structures import Prediction, Segment

CONTEXT = 0.4  # margin on each side of the prompt's extent, as a fraction of its longer side
MIN_CROP = 48  # px: never look at less than this (a tiny box still needs surroundings)
CLICK_EXTENT = 0.25  # a lone first click's assumed object size, as a fraction of the image's longer side
Crop = tuple[int, int, int, int]  # x0, y0, x1, y1 pixels, x1 / y1 exclusive


def crop_around(extent: Sequence[float], image_hw: tuple[int, int], context: float = CONTEXT,
                min_side: int = MIN_CROP) -> Crop:
    """A square crop (clipped only where the image is smaller) around xyxy `extent` grown by `context` of its longer
    side on every side; shifted, not shrunk, to stay inside the image. Square: the model pads to a square anyway."""
    h, w = image_hw
    x0, y0, x1, y1 = (float(v) for v in extent)
    if not np.isfinite([x0, y0, x1, y1]).all() or x1 < x0 or y1 < y0:
        raise ValueError(f"crop extent must be a finite xyxy box, got {[x0, y0, x1, y1]}")
    side = max(x1 - x0, y1 - y0) * (1 + 2 * context)
    side = int(np.ceil(max(side, min_side)))
    out = []
    for centre, limit in (((x0 + x1) / 2, w), ((y0 + y1) / 2, h)):
        length = min(side, limit)
        start = int(round(centre - length / 2))
        start = min(max(0, start), limit - length)
        out.append((start, start + length))
    (cx0, cx1), (cy0, cy1) = out
    return cx0, cy0, cx1, cy1


def click_extent(clicks: Sequence[tuple[float, float, bool]], previous: np.ndarray | None,
                 image_hw: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """xyxy extent the next click prediction must see: the previous mask's box joined with every positive click, or
    a CLICK_EXTENT square around a first positive click; None without any positive click."""
    positives = [(float(x), float(y)) for x, y, p in clicks if p]
    if not positives:
        return None
    xs, ys = [p[0] for p in positives], [p[1] for p in positives]
    if previous is not None and np.asarray(previous, bool).any():
        rows, cols = np.nonzero(np.asarray(previous, bool).any(1))[0], np.nonzero(np.asarray(previous, bool).any(0))[0]
        xs += [float(cols[0]), float(cols[-1] + 1)]
        ys += [float(rows[0]), float(rows[-1] + 1)]
    else:
        half = CLICK_EXTENT * max(image_hw) / 2
        xs += [positives[0][0] - half, positives[0][0] + half]
        ys += [positives[0][1] - half, positives[0][1] + half]
    return min(xs), min(ys), max(xs), max(ys)


def box_to_crop(box: Sequence[float], crop: Crop) -> np.ndarray:
    """xyxy box in image pixels -> the same box in crop pixels (float32 (4,))."""
    return np.asarray(box, np.float32).reshape(4) - np.array([crop[0], crop[1], crop[0], crop[1]], np.float32)


def clicks_to_crop(clicks: Sequence[tuple[float, float, bool]], crop: Crop) -> list[tuple[float, float, bool]]:
    """(x, y, positive) clicks in image pixels -> crop pixels; clicks outside the crop are dropped."""
    x0, y0, x1, y1 = crop
    return [(float(x) - x0, float(y) - y0, bool(p)) for x, y, p in clicks if x0 <= x < x1 and y0 <= y < y1]


def paste(mask: np.ndarray, crop: Crop, image_hw: tuple[int, int]) -> np.ndarray:
    """A crop's (h, w) mask (bool or float) placed into an image-size (H, W) array of zeros at `crop`."""
    x0, y0, x1, y1 = crop
    if np.shape(mask) != (y1 - y0, x1 - x0):
        raise ValueError(f"mask shape {np.shape(mask)} does not match the crop {(y1 - y0, x1 - x0)}")
    out = np.zeros(tuple(image_hw), np.asarray(mask).dtype)
    out[y0:y1, x0:x1] = mask
    return out


def segment_on_crop(segment, image: np.ndarray, extent: Sequence[float], boxes: Sequence[Sequence[float]] = (),
                    clicks: Sequence[tuple[float, float, bool]] = (), context: float = CONTEXT) -> list[np.ndarray]:
    """Run `segment(crop_image, crop_boxes, crop_clicks) -> [crop-size masks]` on the crop around `extent` and return
    the masks pasted back at the image's full size. The predictor's prompt path calls this with its own model call
    (the crop is resized to the model's working size there, as any image is)."""
    hw = tuple(np.shape(image)[:2])
    crop = crop_around(extent, hw, context)
    x0, y0, x1, y1 = crop
    masks = segment(np.ascontiguousarray(image[y0:y1, x0:x1]), [box_to_crop(b, crop) for b in boxes],
                    clicks_to_crop(clicks, crop))
    return [paste(m, crop, hw) for m in masks]


def predict_boxes_on_crops(predict: Callable[..., Prediction], image: np.ndarray, boxes: Sequence[Sequence[float]],
                           points: Sequence[tuple[float, float, bool]] = (), context: float = CONTEXT) -> list[Segment]:
    """The predictor's box path, looking closely: one `predict(crop, boxes=..., points=...)` call per box on the crop
    around it (clicks inside a box go with it, as in one whole-image call), segments pasted back at full size; the
    clicks outside every box, when one is positive, make one more whole-image call. Box segments come first, in the
    order of `boxes` (the order `Predictor.predict` keeps). Measured by `bench/interactive.py` (model vs model_crop)."""
    hw = tuple(np.shape(image)[:2])
    segments: list[Segment] = []
    attached: set[int] = set()
    for box in boxes:
        b = np.asarray(box, np.float32).reshape(4)
        inside = [i for i, (x, y, _) in enumerate(points) if b[0] <= x <= b[2] and b[1] <= y <= b[3]]
        attached.update(inside)
        crop = crop_around(b, hw, context)
        x0, y0, x1, y1 = crop
        pred = predict(np.ascontiguousarray(image[y0:y1, x0:x1]), boxes=[box_to_crop(b, crop)],
                       points=clicks_to_crop([points[i] for i in inside], crop))
        for seg in pred.segments[:1]:
            if seg.mask is not None:
                seg.mask = paste(seg.mask, crop, hw)
            seg.box = np.asarray(seg.box, np.float32) + np.array([x0, y0, x0, y0], np.float32)
            segments.append(seg)
    loose = [c for i, c in enumerate(points) if i not in attached]
    if any(positive for _, _, positive in loose):
        segments += predict(image, boxes=None, points=loose).segments
    for i, seg in enumerate(segments):
        seg.id = i + 1
    return segments
