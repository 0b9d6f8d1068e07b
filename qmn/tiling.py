"""Sliding-window inference at the photo's own scale: why shrinking a 1280 px photo to the 256 px model input turns
60 px objects into 12 px ones that a stride-4 mask cannot draw. Instead the photo keeps its scale (shrunk only past
`max_side`), is cut into overlapping `tile` x `tile` windows (the size the model trained its crops at), and the
windows' answers are merged.

Each window has a core; the cores partition the image (boundaries in the middle of each overlap). An object is
answered by the window whose core holds its box centre, which is the window that sees it whole whenever it is
smaller than the overlap; masks are pasted back at full size. Semantic maps take each pixel from its core's window.
Pure functions: the model is passed in as `predict_fn(image) -> Prediction`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from qmn.structures import Prediction, Segment

TILED_TASKS = ("instance", "detection", "semantic")  # panoptic, referring, foreground: one whole-image pass


@dataclass(frozen=True)
class Window:
    x0: int
    y0: int
    x1: int
    y1: int  # the window, in pixels of the scaled image (end exclusive)
    core: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the pixels this window answers for


def inference_scale(height: int, width: int, tile: int, max_side: int) -> float:
    """Photo pixels -> model pixels: the photo's own scale, shrunk when its long side passes `max_side`; a photo
    smaller than one tile grows to fill it (as the training crops do)."""
    long = max(height, width)
    return max(tile, min(long, max_side)) / long


def _spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Along one axis: (start, end, core start, core end) of windows evenly spread over `length`."""
    if length <= tile:
        return [(0, length, 0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    starts = [round(i * (length - tile) / (n - 1)) for i in range(n)]
    cuts = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(n - 1)] + [length]
    return [(s, s + tile, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


def tile_windows(height: int, width: int, tile: int, overlap: int) -> list[Window]:
    """Windows of at most `tile` x `tile` covering the image, neighbours overlapping by at least `overlap` pixels."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    return [Window(x0, y0, x1, y1, (cx0, cy0, cx1, cy1))
            for y0, y1, cy0, cy1 in _spans(height, tile, overlap) for x0, x1, cx0, cx1 in _spans(width, tile, overlap)]


def _in_core(segment: Segment, window: Window) -> bool:
    cx = window.x0 + (segment.box[0] + segment.box[2]) / 2
    cy = window.y0 + (segment.box[1] + segment.box[3]) / 2
    x0, y0, x1, y1 = window.core
    return x0 <= cx < x1 and y0 <= cy < y1


def _to_photo(segment: Segment, window: Window, scaled_hw: tuple[int, int], photo_hw: tuple[int, int]) -> Segment:
    """A window's segment in photo pixels: mask pasted at its place and resized, box shifted and scaled."""
    sy, sx = photo_hw[0] / scaled_hw[0], photo_hw[1] / scaled_hw[1]
    box = (segment.box + np.array([window.x0, window.y0, window.x0, window.y0], np.float32)) * np.array([sx, sy, sx, sy],
                                                                                                       np.float32)
    mask = None
    if segment.mask is not None:
        full = np.zeros(scaled_hw, bool)
        full[window.y0:window.y1, window.x0:window.x1] = segment.mask
        if full.shape != photo_hw:
            full = cv2.resize(full.view(np.uint8), photo_hw[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
        mask = full
    return dataclasses.replace(segment, box=box.astype(np.float32), mask=mask)


def tiled_predict(image: np.ndarray, predict_fn: Callable[[np.ndarray], Prediction], task: str, prompts: list[str],
                  tile: int, overlap: int, max_side: int, max_segments: int = 100) -> Prediction:
    """`image` (H, W, 3) uint8 at its own scale (capped by `max_side`), window by window through `predict_fn`; at most
    `max_segments` instances, the best-scoring ones (as one whole-image pass keeps its top 100)."""
    photo_hw = image.shape[:2]
    scale = inference_scale(*photo_hw, tile, max_side)
    scaled_hw = (max(1, round(photo_hw[0] * scale)), max(1, round(photo_hw[1] * scale)))
    scaled = image if scaled_hw == photo_hw else cv2.resize(
        image, scaled_hw[::-1], interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = Prediction(task=task, prompts=prompts, image_size=photo_hw)
    if task not in TILED_TASKS:
        raise ValueError(f"tiled inference supports {', '.join(TILED_TASKS)}, not {task!r}")
    semantic = np.full(scaled_hw, -1, np.int32)
    best: dict[str, Segment] = {}  # semantic: per label, its best-scoring window segment
    answered: list[tuple[Segment, Window]] = []  # instance / detection: each window's segments in its core
    for window in tile_windows(*scaled_hw, tile, overlap):
        pred = predict_fn(np.ascontiguousarray(scaled[window.y0:window.y1, window.x0:window.x1]))
        if task != "semantic":
            answered += [(s, window) for s in pred.segments if _in_core(s, window)]
            continue
        x0, y0, x1, y1 = window.core
        semantic[y0:y1, x0:x1] = pred.semantic[y0 - window.y0:y1 - window.y0, x0 - window.x0:x1 - window.x0]
        for s in pred.segments:
            if s.label not in best or s.score > best[s.label].score:
                best[s.label] = s
    # the photo's best `max_segments` (COCO's maxDets) are pasted at full size; the rest never cost a full mask
    answered.sort(key=lambda pair: -pair[0].score)
    out.segments += [_to_photo(s, window, scaled_hw, photo_hw) for s, window in answered[:max_segments]]
    if task == "semantic":
        if scaled_hw != photo_hw:
            semantic = cv2.resize(semantic, photo_hw[::-1], interpolation=cv2.INTER_NEAREST)
        out.semantic = semantic
        for t, label in enumerate(prompts):
            mask = semantic == t
            if mask.any() and label in best:
                ys, xs = np.nonzero(mask)
                box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
                out.segments.append(dataclasses.replace(best[label], mask=mask, box=box))
    out.segments.sort(key=lambda s: -s.score)
    for i, s in enumerate(out.segments, 1):
        s.id = i
    return out
