"""Pixel tools behind the correction buttons: overlay rendering, pick-by-click, brush, box, GrabCut,
matting refinement and the uncertainty score that orders the review queue. No Gradio here."""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from app.annotations import Region

PALETTE = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
        (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
        (170, 110, 40), (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128), (128, 128, 128),
    ],
    np.uint8,
)


def region_color(region_id: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in PALETTE[(region_id - 1) % len(PALETTE)])


def color_hex(region_id: int) -> str:
    return "#%02x%02x%02x" % region_color(region_id)


def render_overlay(
    image: np.ndarray,
    regions: Sequence[Region],
    selected: Optional[int] = None,
    box_corner: Optional[tuple[int, int]] = None,
    opacity: float = 0.45,
) -> np.ndarray:
    """RGB (H, W, 3) uint8: visible masks blended in their colour, the selected one outlined in white."""
    out = image.astype(np.float32).copy()
    for r in regions:
        if r.visible and r.mask.any():
            out[r.mask] = out[r.mask] * (1 - opacity) + np.array(region_color(r.id), np.float32) * opacity
    out = out.astype(np.uint8)
    thickness = max(1, round(max(image.shape[:2]) / 300))
    for r in regions:
        if r.visible and r.mask.any():
            contours, _ = cv2.findContours(r.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            color = (255, 255, 255) if r.id == selected else region_color(r.id)
            cv2.drawContours(out, contours, -1, color, thickness * (2 if r.id == selected else 1))
    if box_corner is not None:
        cv2.drawMarker(out, tuple(int(v) for v in box_corner), (255, 255, 0), cv2.MARKER_CROSS, 8 * thickness, thickness)
    return out


def region_at(regions: Sequence[Region], x: int, y: int) -> Optional[int]:
    """Id of the smallest visible region covering pixel (x, y): the innermost one is what a click means."""
    hits = [r for r in regions if r.visible and 0 <= y < r.mask.shape[0] and 0 <= x < r.mask.shape[1] and r.mask[y, x]]
    return min(hits, key=lambda r: r.area).id if hits else None


def box_from_corners(p0: Sequence[float], p1: Sequence[float], width: int, height: int) -> list[float]:
    """xyxy box spanned by two clicked corners, clipped to the image; ValueError if it has no area."""
    x0, x1 = sorted((float(p0[0]), float(p1[0])))
    y0, y1 = sorted((float(p0[1]), float(p1[1])))
    box = [max(0.0, x0), max(0.0, y0), min(float(width), x1 + 1), min(float(height), y1 + 1)]
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        raise ValueError(f"box {box} is too small: click two opposite corners at least 2 px apart")
    return box


def stroke_mask(editor_value: Optional[dict], shape: tuple[int, int]) -> np.ndarray:
    """Painted pixels of an ImageEditor value: layers[0] alpha > 0, as (H, W) bool of `shape`."""
    layers = (editor_value or {}).get("layers") or []
    if not layers or layers[0] is None:
        raise ValueError("nothing painted: draw on the brush canvas first")
    layer = np.asarray(layers[0])
    if layer.ndim != 3 or layer.shape[2] != 4:
        raise ValueError(f"brush layer must be RGBA, got shape {layer.shape}")
    painted = layer[..., 3] > 0
    if painted.shape != tuple(shape):
        painted = cv2.resize(painted.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return painted


def apply_brush(mask: np.ndarray, painted: np.ndarray, erase: bool) -> np.ndarray:
    return mask & ~painted if erase else mask | painted


def refine_with_matting(image: np.ndarray, mask: np.ndarray, trimap_width: int | None = None) -> np.ndarray:
    """Alpha matte (H, W) float32 via qmn.matting (`trimap_width` None: the band where the mask is uncertain);
    ValueError with a clear message when it is not installed."""
    try:
        from qmn.matting import refine
    except ImportError as e:
        raise ValueError(f"edge refinement is unavailable: qmn.matting.refine could not be imported ({e})") from None
    alpha = np.asarray(refine(image, mask, trimap_width), np.float32)
    if alpha.shape != mask.shape:
        raise ValueError(f"matting returned shape {alpha.shape}, expected {mask.shape}")
    return np.clip(alpha, 0.0, 1.0)


def cutout_rgba(image: np.ndarray, region: Region) -> np.ndarray:
    """(H, W, 4) uint8 cut-out cropped to the region's box; alpha = matte if refined (object colour re-estimated
    in the soft band by `qmn.matting.cutout`, so no background halo), else the hard mask."""
    alpha = region.alpha if region.alpha is not None else region.mask.astype(np.float32)
    ys, xs = np.nonzero(alpha > 0)
    if len(xs) == 0:
        return np.zeros((1, 1, 4), np.uint8)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if region.alpha is not None:
        from qmn.matting import cutout

        return cutout(image[y0:y1, x0:x1], alpha[y0:y1, x0:x1])
    rgba = np.dstack([image, np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)])
    return rgba[y0:y1, x0:x1]


def uncertainty(regions: Sequence[Region], threshold: float) -> float:
    """How unsure the model was on an image, in [0, 1]: mean over regions of 1 - |score - thr| / max side.

    Scores sitting on the threshold are the ones a reviewer should look at first; an image with no
    region at all is maximally uncertain (the model may have missed everything).
    """
    if not regions:
        return 1.0
    span = max(threshold, 1.0 - threshold, 1e-6)
    return float(np.mean([1.0 - min(1.0, abs(r.score - threshold) / span) for r in regions]))
