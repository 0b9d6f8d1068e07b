"""Classical GrabCut (OpenCV) from an xyxy box or from clicks, with a plausibility guard: the classical fill the app
offers next to the model's prompts, and the classical baseline of `bench/interactive.py`.

Why the guard: on real photos GrabCut from a box often collapses (a sliver, one fragment, the whole box, a ring
that misses the object's middle): unguarded it scored 0.45 mean IoU on held-out coco128, below the bare box (0.56).
A user drew the box around ONE object, tightly, so a plausible result fills a sensible part of the box, reaches
most of its sides, is mostly one piece and covers something near the middle; anything else falls back to the
ellipse inscribed in the box (a better prior than the box itself: held-out mean IoU 0.58 vs 0.54 on coco128,
0.80 vs 0.71 on fruitsnuts; see `bench/interactive.py`).

GrabCut runs on a crop of the prompt plus a margin of context (`CONTEXT` of its longer side, at least
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
MIN_FILL, MAX_FILL = 0.15, 0.97  # plausible fraction of the box a result covers
MIN_SIDES = 4  # a tight box touches the object on all 4 sides (3: coco128 train-part box IoU 0.639 -> 4: 0.654)
SIDE_TOLERANCE = 0.25  # ... within this fraction of the box size (a hand-drawn box is often loose)
MIN_MAIN_PIECE = 0.6  # the largest connected piece holds at least this fraction of the result
CLICK_RADIUS = 8  # px (at the working size) of a click's hard seed disc
FIRST_CLICK_EXTENT = 0.12  # a first click's probable-object disc, as a fraction of the image's longer side
WORK_SIZE = 256  # px: GrabCut runs on the crop scaled to at most this side (its cost grows with pixels, not detail)
# clicks are solved coarse to fine: all iterations at this size, then one at WORK_SIZE from that answer
COARSE_SIZE = 128
BOX_WORK_SIZE = 384  # a box is filled once, so it affords more detail than a click (train parts: +0.02 IoU)
Click = tuple[float, float, bool]


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


def _context(x0: int, y0: int, x1: int, y1: int, h: int, w: int) -> tuple[int, int, int, int]:
    margin = max(MIN_CONTEXT_PX, int(round(CONTEXT * max(x1 - x0, y1 - y0))))
    return max(0, x0 - margin), max(0, y0 - margin), min(w, x1 + margin), min(h, y1 + margin)


def _run_grabcut(crop_rgb: np.ndarray, labels: np.ndarray, rect: tuple[int, int, int, int] | None,
                 iterations: int, seeds: Sequence[Click] = (), work_size: int = WORK_SIZE) -> np.ndarray | None:
    """Foreground bool map (crop size) of GrabCut on `crop_rgb` from initial `labels` (or `rect`, crop px (x, y, w, h))
    plus hard seed discs at `seeds` (crop px), solved at <= `work_size` px; None when it cannot run or finds nothing."""
    h, w = labels.shape
    scale = min(1.0, work_size / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        crop_rgb = cv2.resize(crop_rgb, size, interpolation=cv2.INTER_AREA)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        if rect is not None:
            x, y, rw, rh = rect
            x0, y0 = int(round(x * scale)), int(round(y * scale))
            rect = (x0, y0, max(1, int(round((x + rw) * scale)) - x0), max(1, int(round((y + rh) * scale)) - y0))
    for x, y, positive in seeds:
        value = int(cv2.GC_FGD if positive else cv2.GC_BGD)
        cv2.circle(labels, (int(x * scale), int(y * scale)), CLICK_RADIUS, value, -1)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    mode = cv2.GC_INIT_WITH_RECT if rect is not None else cv2.GC_INIT_WITH_MASK
    try:
        cv2.grabCut(cv2.cvtColor(np.ascontiguousarray(crop_rgb), cv2.COLOR_RGB2BGR), labels, rect or (0, 0, 0, 0),
                    bgd, fgd, int(iterations), mode)
    except cv2.error:  # a colour model had no samples (box = whole image, or a one-colour region)
        return None
    found = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if scale < 1.0:
        found = cv2.resize(found.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    return found if found.any() else None


def _run_coarse_to_fine(crop_rgb: np.ndarray, labels: np.ndarray, iterations: int,
                        seeds: Sequence[Click]) -> np.ndarray | None:
    """`_run_grabcut` from initial `labels`, first at COARSE_SIZE, then one iteration at WORK_SIZE starting from the
    coarse answer (hard labels and seeds kept). Why: from a rough prior most of GrabCut's time goes into the first
    graph cuts, whose colour models still overlap; at 128 px they are cheap, and the fine pass only moves the
    boundary. On the training parts of bench/interactive it was also the better fill: NoC@85 coco128 12.1 -> 11.6,
    fruitsnuts 4.0 -> 2.8; a first click 0.39 -> 0.14 s (median, 1280 x 1024 photo)."""
    if max(labels.shape) <= 1.25 * COARSE_SIZE:
        return _run_grabcut(crop_rgb, labels, None, iterations, seeds)
    coarse = _run_grabcut(crop_rgb, labels.copy(), None, iterations, seeds, COARSE_SIZE)
    if coarse is None:
        return _run_grabcut(crop_rgb, labels, None, iterations, seeds)
    hard = (labels == cv2.GC_BGD) | (labels == cv2.GC_FGD)
    start = np.where(hard, labels, np.where(coarse, cv2.GC_PR_FGD, cv2.GC_PR_BGD)).astype(np.uint8)
    return _run_grabcut(crop_rgb, start, None, 1, seeds)


def main_pieces(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """(the mask's largest 8-connected piece plus pieces >= 10% of it, that piece's share of the mask area)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask.astype(bool), 1.0
    areas = stats[1:, cv2.CC_STAT_AREA]
    largest = int(areas.max())
    keep = np.flatnonzero(areas >= 0.1 * largest) + 1
    return np.isin(labels, keep), largest / float(areas.sum())


def plausible_in_box(mask: np.ndarray) -> bool:
    """Is `mask` (bool, the box's own pixels) a believable object for a box drawn tightly around it?"""
    h, w = mask.shape
    fill = mask.mean()
    if not MIN_FILL <= fill <= MAX_FILL:
        return False
    ty, tx = max(1, int(round(SIDE_TOLERANCE * h))), max(1, int(round(SIDE_TOLERANCE * w)))
    sides = int(mask[:ty].any()) + int(mask[-ty:].any()) + int(mask[:, :tx].any()) + int(mask[:, -tx:].any())
    if sides < MIN_SIDES:
        return False
    _, share = main_pieces(mask)
    if share < MIN_MAIN_PIECE:
        return False
    centre = mask[h // 4: h - h // 4, w // 4: w - w // 4]
    return centre.size == 0 or centre.mean() >= 0.1


def box_prior(height: int, width: int) -> np.ndarray:
    """bool (height, width): the ellipse inscribed in a box, the fill when GrabCut's result is not believable."""
    prior = np.zeros((height, width), np.uint8)
    cv2.ellipse(prior, (width // 2, height // 2), (max(1, width // 2), max(1, height // 2)), 0, 0, 360, 1, -1)
    return prior > 0


def grabcut_from_box(image: np.ndarray, box: Sequence[float], seed_mask: Optional[np.ndarray] = None,
                     iterations: int = 5, guard: bool = True) -> np.ndarray:
    """(H, W) bool mask of the object in xyxy pixel `box`. Without `seed_mask` GrabCut starts from the box (everything
    inside probably foreground); with it, pixels inside the box start as probable foreground where the seed is set and
    probable background elsewhere. Pixels outside the box are always background. Seeded (same input -> same mask).
    With `guard`, small stray pieces are dropped and an implausible result (`plausible_in_box`) falls back to the
    ellipse inscribed in the box (`box_prior`), as does a run that cannot start or finds nothing (no background
    around a box filling the image, a flat box)."""
    image = to_rgb_uint8(image)
    h, w = image.shape[:2]
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if seed_mask is not None and np.shape(seed_mask) != (h, w):
        raise ValueError(f"seed_mask has shape {np.shape(seed_mask)}, expected the image's {(h, w)}")
    x0, y0, x1, y1 = _box_pixels(box, h, w)
    cx0, cy0, cx1, cy1 = _context(x0, y0, x1, y1, h, w)
    crop = image[cy0:cy1, cx0:cx1]
    rect = (x0 - cx0, y0 - cy0, x1 - x0, y1 - y0)  # the box in crop coordinates, (x, y, w, h)
    in_box = np.zeros(crop.shape[:2], bool)
    in_box[rect[1]:rect[1] + rect[3], rect[0]:rect[0] + rect[2]] = True

    labels = np.full(crop.shape[:2], cv2.GC_BGD, np.uint8)
    use_rect: tuple[int, int, int, int] | None = rect
    if seed_mask is not None:
        seed = np.asarray(seed_mask, bool)[cy0:cy1, cx0:cx1] & in_box
        if seed.any() and not seed.all():  # GrabCut needs samples of both colour models
            labels[in_box] = cv2.GC_PR_BGD
            labels[seed] = cv2.GC_PR_FGD
            use_rect = None
    found = _run_grabcut(crop, labels, use_rect, iterations, work_size=BOX_WORK_SIZE)
    box_only = (found & in_box)[rect[1]:rect[1] + rect[3], rect[0]:rect[0] + rect[2]] if found is not None else None
    if box_only is not None and guard:
        box_only, _ = main_pieces(box_only)
        if not plausible_in_box(box_only):
            box_only = None
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = box_prior(y1 - y0, x1 - x0) if box_only is None else box_only
    return out


def grabcut_from_clicks(image: np.ndarray, clicks: Sequence[Click], previous: Optional[np.ndarray] = None,
                        iterations: int = 3) -> np.ndarray:
    """(H, W) bool mask from (x, y, positive) pixel clicks, as interactive GrabCut does: clicks are hard seeds (discs of
    CLICK_RADIUS px), the previous mask (or, at first, a disc around the first positive click) is the probable object,
    everything else probable background, all on a crop around them. Keeps the pieces holding a positive click; an
    empty list or no positive click gives an empty mask."""
    image = to_rgb_uint8(image)
    h, w = image.shape[:2]
    positives = [(x, y) for x, y, p in clicks if p]
    if not positives:
        return np.zeros((h, w), bool)
    prior = np.zeros((h, w), np.uint8)
    if previous is not None and np.asarray(previous, bool).any():
        prior[np.asarray(previous, bool)] = 1
    else:
        r = max(CLICK_RADIUS + 2, int(FIRST_CLICK_EXTENT * max(h, w)))
        cv2.circle(prior, (int(positives[0][0]), int(positives[0][1])), r, 1, -1)
    ys, xs = np.nonzero(prior)
    pts = np.array([(x, y) for x, y, _ in clicks] + list(zip(xs[[0, -1]], ys[[0, -1]])), np.float64)
    bx0, by0 = min(xs.min(), pts[:, 0].min()), min(ys.min(), pts[:, 1].min())
    bx1, by1 = max(xs.max() + 1, pts[:, 0].max() + 1), max(ys.max() + 1, pts[:, 1].max() + 1)
    cx0, cy0, cx1, cy1 = _context(int(bx0), int(by0), int(np.ceil(bx1)), int(np.ceil(by1)), h, w)
    labels = np.where(prior[cy0:cy1, cx0:cx1] > 0, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    seeds = [(x - cx0, y - cy0, p) for x, y, p in clicks]
    found = _run_coarse_to_fine(image[cy0:cy1, cx0:cx1], labels, iterations, seeds)
    if found is None:  # nothing found: the positive click discs at least
        discs = np.zeros(labels.shape, np.uint8)
        for x, y, _ in (s for s in seeds if s[2]):
            cv2.circle(discs, (int(x), int(y)), CLICK_RADIUS, 1, -1)
        found = discs > 0
    count, pieces = cv2.connectedComponents(found.astype(np.uint8), connectivity=8)
    clicked = {int(pieces[int(y) - cy0, int(x) - cx0]) for x, y in positives
               if 0 <= int(y) - cy0 < pieces.shape[0] and 0 <= int(x) - cx0 < pieces.shape[1]} - {0}
    out = np.zeros((h, w), bool)
    out[cy0:cy1, cx0:cx1] = np.isin(pieces, sorted(clicked)) if clicked else found
    return out


def grabcut_click_update(image: np.ndarray, clicks: Sequence[Click], previous: Optional[np.ndarray] = None,
                         iterations: int = 3) -> np.ndarray:
    """(H, W) bool: the previous mask corrected where the newest click says, and only there. GrabCut re-solves the
    whole object from all clicks (`grabcut_from_clicks`), but of what it changes only the connected piece under the
    newest click is taken; when that piece does not put the click on its side, a disc of CLICK_RADIUS image px
    does. Why: a global re-solve also moves parts the user already accepted, so more clicks could make the mask worse;
    a local correction never undoes an earlier one. The first click (no previous mask) is plain GrabCut."""
    proposal = grabcut_from_clicks(image, clicks, previous, iterations)
    if previous is None or not np.asarray(previous, bool).any() or not clicks:
        return proposal
    out = np.asarray(previous, bool).copy()
    h, w = out.shape
    x, y, positive = clicks[-1]
    col, row = min(w - 1, max(0, int(x))), min(h - 1, max(0, int(y)))
    _, pieces = cv2.connectedComponents((proposal != out).astype(np.uint8), connectivity=8)
    piece = pieces == pieces[row, col] if pieces[row, col] else None
    if piece is not None:
        out[piece] = proposal[piece]
    if out[row, col] != positive:
        disc = np.zeros((h, w), np.uint8)
        cv2.circle(disc, (col, row), CLICK_RADIUS, 1, -1)
        out[disc > 0] = positive
    return out
