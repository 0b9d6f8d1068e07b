"""Foreground colour estimation and RGBA cut-outs without a background halo.

Why: a band pixel's colour is a mix of object and background; cutting out with the raw image colours drags
the old background into the edge. pymatting's multi-level foreground estimation (Germer et al. 2020) recovers
the object colour F in `I = alpha F + (1 - alpha) B`, solved only on the crop around fractional alpha.
"""
from __future__ import annotations

import numpy as np

from qmn.matting.band import band_box
from qmn.matting.refine import as_rgb

FOREGROUND_MARGIN = 8  # context px around the fractional-alpha pixels given to the estimator


def estimate_foreground(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Object colour uint8 (H, W, 3): the image where alpha == 1, the estimated F where 0 < alpha < 1."""
    foreground = image.copy()
    box = band_box((alpha > 0.0) & (alpha < 1.0), FOREGROUND_MARGIN)
    if box is None:
        return foreground
    from pymatting import estimate_foreground_ml

    y0, y1, x0, x1 = box
    crop = image[y0:y1, x0:x1].astype(np.float64) / 255.0
    estimated = estimate_foreground_ml(crop, alpha[y0:y1, x0:x1].astype(np.float64))
    foreground[y0:y1, x0:x1] = np.clip(estimated * 255.0 + 0.5, 0, 255).astype(np.uint8)
    opaque = alpha >= 1.0
    foreground[opaque] = image[opaque]
    return foreground


def cutout(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGBA uint8 (H, W, 4): estimated foreground colour + alpha (straight, not premultiplied)."""
    rgb = as_rgb(image)
    alpha = np.asarray(alpha, np.float32)
    if alpha.shape != rgb.shape[:2]:
        raise ValueError(f"cutout: alpha shape {alpha.shape} does not match image size {rgb.shape[:2]}")
    alpha = np.clip(alpha, 0.0, 1.0)
    rgba = np.empty(rgb.shape[:2] + (4,), np.uint8)
    rgba[..., :3] = estimate_foreground(rgb, alpha)
    rgba[..., 3] = np.round(alpha * 255.0).astype(np.uint8)
    return rgba
