"""Mask encodings used by the dataset formats: COCO RLE and polygons (COCO and YOLO-seg).

Public API:
    encode_rle(mask) -> {"size": [H, W], "counts": str}          exact, compressed COCO RLE (pycocotools)
    decode_rle(rle, height=None, width=None) -> (H, W) bool       counts as list or str; validated
    check_rle(rle, height=None, width=None) -> None               the validation alone (cheap, no decode)
    check_polygons(polygons) -> None                              ValueError unless [[x, y, ...], ...]
    mask_to_polygons(mask) -> list[list[float]]                   COCO: one polygon per part
    mask_to_polygon(mask) -> list[float]                          YOLO-seg: one polygon for all parts
    polygons_to_mask(polygons, height, width) -> (H, W) bool      pycocotools rasterisation
    mask_iou(a, b) -> float

Why polygons need care: pycocotools rasterises each polygon with the even-odd rule (a pixel is in
when its centre is inside) and UNIONS the polygons of one annotation, so a hole written as a
separate polygon would be filled in. We therefore splice every hole (and, for YOLO, every other
part) into its outer ring with a zero-width cut: the cut is walked there and back, so it adds an
even number of crossings and changes nothing, while the hole ring flips its inside to "out".
Outlines follow pixel edges (traced on a 2x upsampled mask, vertices at quarter pixels), so
axis-aligned and single-pixel shapes come back exactly; diagonal staircases may lose a little,
which the writers report per annotation as IoU.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np
from pycocotools import mask as coco_mask
from scipy.spatial import cKDTree

_MAX_RLE_CHARS_PER_COUNT = 7  # 7 x 5 bits = 35 bits, more than any image's pixel count needs


def encode_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a (H, W) mask, JSON-ready (`counts` is a str)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    pixels = np.ascontiguousarray(mask, dtype=np.uint8)
    # pycocotools wants column-major bytes: cv2's transpose makes them ~4x faster than np.asfortranarray (an autosave
    # encodes every mask of the image at each edit)
    rle = coco_mask.encode(cv2.transpose(pixels).T if pixels.size else np.asfortranarray(pixels))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict, height: Optional[int] = None, width: Optional[int] = None) -> np.ndarray:
    """(H, W) bool mask of a COCO RLE whose `counts` is a list of ints or a compressed str.

    The run lengths are checked to cover exactly H*W pixels before anything is decoded (pycocotools'
    C decoder trusts them and would write past the mask). `height`/`width`, when given, must match
    `size`. Raises ValueError naming what is wrong.
    """
    h, w, runs = _checked_runs(rle, height, width)
    return _runs_to_mask(runs, h, w)


def check_rle(rle: dict, height: Optional[int] = None, width: Optional[int] = None) -> None:
    """Raise ValueError unless `rle` is a valid COCO RLE (of `height` x `width` when given)."""
    _checked_runs(rle, height, width)


def _checked_runs(rle: dict, height: Optional[int], width: Optional[int]) -> tuple[int, int, np.ndarray]:
    """(H, W, run lengths) of a validated RLE."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("invalid RLE: expected a dict with 'size' and 'counts'")
    size = rle["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
        raise ValueError(f"invalid RLE: 'size' must be [height, width] positive ints, got {size!r}")
    h, w = int(size[0]), int(size[1])
    if (height is not None and h != height) or (width is not None and w != width):
        raise ValueError(f"invalid RLE: size {h}x{w} differs from the image's {height}x{width}")
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        runs = _counts_from_string(counts.encode("ascii", "replace") if isinstance(counts, str) else counts)
    elif isinstance(counts, list) and all(_is_int(c) for c in counts):
        runs = np.asarray(counts, np.int64)
    else:
        raise ValueError("invalid RLE: 'counts' must be a list of ints or a string")
    if runs.size and runs.min() < 0:
        raise ValueError("invalid RLE: negative run length in 'counts'")
    if int(runs.sum()) != h * w:
        raise ValueError(f"invalid RLE: 'counts' cover {int(runs.sum())} pixels, size {h}x{w} has {h * w}")
    return h, w, runs


def _runs_to_mask(runs: np.ndarray, h: int, w: int) -> np.ndarray:
    """Alternating 0/1 runs (starting with 0) over the column-major pixels -> (H, W) bool."""
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(w, h).T  # COCO RLE runs down columns: (W, H) -> (H, W)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _counts_from_string(data: bytes) -> np.ndarray:
    """Run lengths of a compressed COCO RLE string (vectorised port of pycocotools' rleFrString).

    Each count is 5-bit little-endian groups stored as chr(48 + group | 0x20 if more follow); the
    last group's bit 0x10 is a sign bit; counts after the second are deltas to the count two back.
    """
    if not data:
        return np.zeros(0, np.int64)
    codes = np.frombuffer(data, np.uint8).astype(np.int64) - 48
    if codes.min() < 0 or codes.max() > 63:
        raise ValueError("invalid RLE: 'counts' string has characters outside the RLE alphabet")
    more = (codes & 0x20) != 0
    if more[-1]:
        raise ValueError("invalid RLE: 'counts' string ends in the middle of a number")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > _MAX_RLE_CHARS_PER_COUNT:
        raise ValueError("invalid RLE: 'counts' string encodes an impossibly large number")
    position = np.arange(codes.size) - np.repeat(starts, lengths)  # index of each char in its number
    values = np.add.reduceat((codes & 0x1F) << (5 * position), starts)
    negative = (codes[ends] & 0x10) != 0
    values = values - np.where(negative, 1 << (5 * lengths), 0)
    # Delta decoding: x[i] += x[i-2] for i >= 3, i.e. running sums over odd indices and over even >= 2.
    values[1::2] = np.cumsum(values[1::2])
    values[2::2] = np.cumsum(values[2::2])
    return values


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """(H, W) bool union of COCO polygons `[[x1, y1, x2, y2, ...], ...]` in pixel-edge coordinates.

    Polygons with fewer than 3 points (COCO files contain some) cover nothing and are dropped.
    Raises ValueError for non-numeric coordinates, an odd coordinate count, or coordinates further
    outside the image than its own size (pycocotools allocates memory per pixel of edge length, so a
    coordinate of 1e9 would exhaust the machine's memory).
    """
    check_polygons(polygons)
    rings = [[float(v) for v in polygon] for polygon in polygons if len(polygon) >= 6]
    if not rings:
        return np.zeros((height, width), bool)
    span = max(height, width)
    lowest, highest = min(min(ring) for ring in rings), max(max(ring) for ring in rings)
    if lowest < -span or highest > 2 * span:
        raise ValueError(f"invalid polygon: coordinates from {lowest:g} to {highest:g} lie far outside the "
                         f"{width}x{height} image")
    merged = coco_mask.merge(coco_mask.frPyObjects(rings, height, width))
    return _runs_to_mask(_counts_from_string(merged["counts"]), height, width)


def check_polygons(polygons) -> None:
    """Raise ValueError unless `polygons` is a list of finite coordinate lists of even length."""
    if not isinstance(polygons, (list, tuple)):
        raise ValueError("invalid polygons: expected a list of [x1, y1, x2, y2, ...] lists")
    for polygon in polygons:
        if not isinstance(polygon, (list, tuple)) or not all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)
            for v in polygon
        ):
            raise ValueError("invalid polygon: expected a list of finite numbers [x1, y1, x2, y2, ...]")
        if len(polygon) % 2:
            raise ValueError(f"invalid polygon: odd number of coordinates ({len(polygon)})")


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons of a (H, W) mask: one per outer part, with that part's holes spliced in."""
    return [_flatten(ring) for ring in _part_rings(mask)]


def mask_to_polygon(mask: np.ndarray) -> list[float]:
    """One polygon for the whole mask (YOLO-seg has one per object): all parts spliced together."""
    rings = _part_rings(mask)
    if not rings:
        return []
    merged = rings[0]
    for ring in rings[1:]:
        merged = _splice(merged, ring)
    return _flatten(merged)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _part_rings(mask: np.ndarray) -> list[np.ndarray]:
    """Per outer contour, one closed ring (K, 2) float in pixel-edge coords with its holes spliced in."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return []
    x0, y0 = xs.min(), ys.min()
    crop = mask[y0 : ys.max() + 1, x0 : xs.max() + 1].astype(np.uint8)
    # 2x upsample so the traced centres of boundary pixels sit a quarter pixel inside the pixel edges.
    up = np.pad(np.kron(crop, np.ones((2, 2), np.uint8)), 1)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]  # (N, 4): next, previous, first child, parent

    def to_image(contour: np.ndarray) -> np.ndarray:  # (K, 1, 2) upsampled+padded -> (K, 2) image coords
        return (contour.reshape(-1, 2).astype(np.float64) - 1 + 0.5) / 2 + [x0, y0]

    rings = []
    for i, contour in enumerate(contours):
        if hierarchy[i][3] != -1:
            continue  # a hole: spliced into its parent below
        ring = to_image(contour)
        child = hierarchy[i][2]
        while child != -1:
            ring = _splice(ring, to_image(contours[child]))
            child = hierarchy[child][0]
        rings.append(ring)
    return rings


def _splice(ring: np.ndarray, other: np.ndarray) -> np.ndarray:
    """`ring` with `other` inserted through a zero-width cut between their closest vertices."""
    distance, nearest = cKDTree(ring).query(other)
    k = int(np.argmin(distance))
    j = int(nearest[k])
    around = np.concatenate([other[k:], other[: k + 1]])  # walk `other` from vertex k back to k
    return np.concatenate([ring[: j + 1], around, ring[j:]])


def _flatten(ring: np.ndarray) -> list[float]:
    """[x1, y1, x2, y2, ...]; quarter-pixel vertices are exact in 2 decimals."""
    return [round(float(v), 2) for v in ring.reshape(-1)]
