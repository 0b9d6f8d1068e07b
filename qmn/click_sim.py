"""Simulated clicks, as interactive-segmentation papers place them (RITM, SimpleClick): evaluation and training.

Why one module: the benchmark's click protocol and the training click sequences must agree on what "the next click"
means, or the model learns to answer clicks no user (or benchmark) makes.

- `next_click` (evaluation, RITM's `Clicker`): the next click is at the most interior pixel (distance-transform
  maximum, the image edge counting as a border) of the larger error region: positive in a missed object part,
  negative in a wrongly included part; the first click (empty prediction) lands at the object's most interior pixel.
- `simulate_clicks` (training, RITM's iterative sampler without the model in the loop): a first positive click in
  the object, then a "previous prediction" made by perturbing the ground truth (shrunk, grown, a part cut off, a
  blob added); each round places a click at a random pixel of the inner half (distance > max / 2) of the larger
  error region and fixes a disc of the prediction around it, so a sequence mixes positive and negative clicks placed
  where a prediction is wrong.
"""
from __future__ import annotations

import cv2
import numpy as np

Click = tuple[float, float, bool]  # (x, y, positive) in pixels, pixel centres at +0.5


def _distance_inside(region: np.ndarray) -> np.ndarray:
    """float32 (H, W) distance of each region pixel to the nearest non-region pixel; the image edge is a border."""
    padded = np.pad(np.asarray(region, bool), 1).astype(np.uint8)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]


def error_maps(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(missed = gt & ~pred, false = pred & ~gt) distance maps (float32 (H, W)) of the two error regions."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    return _distance_inside(gt & ~pred), _distance_inside(pred & ~gt)


def next_click(gt: np.ndarray, pred: np.ndarray) -> Click | None:
    """The benchmark's next click (RITM protocol): positive at the deepest missed pixel when the missed region is
    deeper than the false one, else negative at the deepest false pixel; None when the prediction is exact."""
    missed, false = error_maps(gt, pred)
    depth_missed, depth_false = float(missed.max(initial=0.0)), float(false.max(initial=0.0))
    if depth_missed == 0.0 and depth_false == 0.0:
        return None
    positive = depth_missed > depth_false
    y, x = np.unravel_index(int(np.argmax(missed if positive else false)), missed.shape)
    return float(x) + 0.5, float(y) + 0.5, bool(positive)


def perturb_mask(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong previous prediction of `gt` (bool (H, W)): empty (the first click), eroded, dilated, a
    half-plane of the object cut off, or a blob of background added; seeded by `rng`."""
    gt = np.asarray(gt, bool)
    h, w = gt.shape
    ys, xs = np.nonzero(gt)
    if len(xs) == 0:
        return gt.copy()
    size = max(2, int(np.sqrt(len(xs))))
    kind = int(rng.integers(5))
    if kind == 0:
        return np.zeros_like(gt)
    if kind in (1, 2):
        r = max(1, int(size * rng.uniform(0.05, 0.25)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        op = cv2.erode if kind == 1 else cv2.dilate
        return op(gt.astype(np.uint8), kernel) > 0
    if kind == 3:
        angle = rng.uniform(0, 2 * np.pi)
        cx, cy = xs.mean(), ys.mean()
        yy, xx = np.mgrid[0:h, 0:w]
        offset = rng.uniform(-0.2, 0.5) * size
        return gt & (((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) < offset)
    out = gt.copy()
    radius = max(2, int(size * rng.uniform(0.15, 0.4)))
    angle = rng.uniform(0, 2 * np.pi)
    edge = int(rng.integers(len(xs)))
    centre = (int(xs[edge] + radius * np.cos(angle)), int(ys[edge] + radius * np.sin(angle)))
    blob = np.zeros((h, w), np.uint8)
    cv2.circle(blob, centre, radius, 1, -1)
    return out | (blob > 0)


def sample_error_click(gt: np.ndarray, pred: np.ndarray, rng: np.random.Generator) -> Click | None:
    """A training click: a random pixel of the inner half (distance > max / 2) of the larger error region, positive
    when that region is missed object, negative when it is false background (RITM's `get_next_points`)."""
    missed, false = error_maps(gt, pred)
    depth_missed, depth_false = float(missed.max(initial=0.0)), float(false.max(initial=0.0))
    if depth_missed == 0.0 and depth_false == 0.0:
        return None
    positive = depth_missed > depth_false
    dist = missed if positive else false
    ys, xs = np.nonzero(dist > max(depth_missed, depth_false) / 2.0)
    pick = int(rng.integers(len(xs)))
    return float(xs[pick]) + 0.5, float(ys[pick]) + 0.5, bool(positive)


def simulate_clicks(gt: np.ndarray, rng: np.random.Generator, max_clicks: int = 4) -> tuple[list[Click], np.ndarray]:
    """A training click sequence for object `gt` (bool (H, W)) of 1..max_clicks clicks: first a positive click at a
    random pixel of the object's inner half (a user's first click), then each further click placed in the error of a
    simulated previous prediction (`perturb_mask`, corrected by a disc around every click it gets). Returns (clicks,
    the prediction the last click corrects), the latter usable as a previous-mask prompt. [] for an empty object."""
    gt = np.asarray(gt, bool)
    first = sample_error_click(gt, np.zeros_like(gt), rng)
    if first is None:
        return [], np.zeros_like(gt)
    clicks: list[Click] = [first]
    pred = perturb_mask(gt, rng)
    rounds = int(rng.integers(1, max_clicks + 1))
    size = max(2.0, float(np.sqrt(gt.sum())))
    while len(clicks) < rounds:
        click = sample_error_click(gt, pred, rng)
        if click is None:
            break
        clicks.append(click)
        # the model's answer to that click, imitated: the disc around it becomes right
        disc = np.zeros(gt.shape, np.uint8)
        cv2.circle(disc, (int(click[0]), int(click[1])), max(2, int(size * rng.uniform(0.2, 0.6))), 1, -1)
        pred = np.where(disc > 0, gt, pred)
    return clicks, pred
