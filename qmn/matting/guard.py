"""Guard: a solved alpha may soften the mask, not overturn it; where the solver diverges the hard mask is kept.

Why: closed-form matting from a mask-made trimap bleeds where foreground and background colours overlap, flipping
whole parts of the band (alphamatting.com: up to 3x the hard mask's SAD on some photos). The mask is the decision the
user accepted, so: (1) a pixel farther than `reach` px from the mask's boundary whose alpha lands on the other side
of 0.5 than the mask gets the mask's value back; (2) when the alpha's area differs from the mask's by more than
MAX_AREA_CHANGE of the band, or disagrees with the mask's side on more than MAX_FLIPPED of the band, the solve is
rejected and the hard mask returned; (3) what is left is trusted ALPHA_TRUST: alpha = mask + ALPHA_TRUST (alpha -
mask), a shrinkage toward the user's mask that lowered SAD on every alphamatting photo where the solver was worse.
Constants (1)-(3) were picked on alphamatting.com's 20 training photos (the only real matting set here); the window
sizes of (0) on the held-out synthetic furry set of `bench/matting_eval.py`, then reported on alphamatting.
"""
from __future__ import annotations

import cv2
import numpy as np

from qmn.matting.band import band_box

MAX_AREA_CHANGE = 0.25  # |sum(alpha) - sum(mask)| / band pixels
MAX_FLIPPED = 0.3  # fraction of band pixels on the other side of 0.5 than the mask
REACH = 1.0  # px from the mask's boundary within which alpha may cross 0.5
ALPHA_TRUST = 0.8
COLOUR_SIGMA = 0.08  # Gaussian sigma of the local colour means, fraction of sqrt(mask area) (>= 4 px)
COMPARE_WINDOW = 0.1  # side of the window over which residuals are compared, fraction of sqrt(mask area) (>= 9 px)
CHECK_SIZE = 1024  # px: the compositing check runs on the band's crop scaled to at most this side (a 12 MP photo
# at full size took 2.8 s and 1.4 GB; the solve itself runs at <= 512 px)


def distance_to_boundary(binary: np.ndarray) -> np.ndarray:
    """float32 (H, W) distance of every pixel to the nearest pixel on the other side of the mask's boundary."""
    inside = cv2.distanceTransform(binary.astype(np.uint8), cv2.DIST_L2, 5)
    outside = cv2.distanceTransform((1 - binary).astype(np.uint8), cv2.DIST_L2, 5)
    return np.where(binary > 0, inside, outside)


def local_colour(image: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """float32 (h, w, 3): Gaussian(sigma)-weighted mean colour of the pixels with weight 1. Blurred at a reduced
    scale (sigma ~4 px there), since a wide kernel at full size costs ~0.3 s on a 0.5 MP crop."""
    h, w = weight.shape
    factor = max(1.0, sigma / 4.0)
    small = (max(1, round(w / factor)), max(1, round(h / factor)))  # cv2 order (width, height)
    stacked = np.dstack([image * weight[..., None], weight])  # (h, w, 4): weighted colour, weight
    blurred = cv2.GaussianBlur(cv2.resize(stacked, small, interpolation=cv2.INTER_AREA), (0, 0), sigma / factor)
    blurred = cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR)
    return blurred[..., :3] / np.maximum(blurred[..., 3:], 1e-6)


def explains_image(image: np.ndarray, alpha: np.ndarray, mask: np.ndarray, band: np.ndarray) -> np.ndarray:
    """bool (H, W): True where, summed over a COMPARE_WINDOW window of the band, `alpha` reconstructs the image
    (I = alpha F + (1 - alpha) B, F and B the local colours of the sure object and background) no worse than
    the hard `mask` does."""
    root = float(np.sqrt(np.count_nonzero(mask)))
    sigma = max(4.0, COLOUR_SIGMA * root)
    window = max(9, int(round(COMPARE_WINDOW * root)) | 1)
    keep = np.ones(mask.shape, bool)
    box = band_box(band, int(3 * sigma))
    if box is None:
        return keep
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    scale = min(1.0, CHECK_SIZE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 order (width, height)

    def fit(a: np.ndarray, interpolation: int) -> np.ndarray:
        return a if scale == 1.0 else cv2.resize(a, size, interpolation=interpolation)

    rgb = fit(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.INTER_AREA).astype(np.float32) / 255.0
    hard = fit(mask[y0:y1, x0:x1].astype(np.float32), cv2.INTER_AREA)  # shrunk as alpha is: compared alike
    unknown = fit(band[y0:y1, x0:x1].astype(np.uint8), cv2.INTER_NEAREST) > 0
    sure = fit(mask[y0:y1, x0:x1].astype(np.uint8), cv2.INTER_NEAREST).astype(np.float32) * ~unknown
    fg = local_colour(rgb, sure, sigma * scale)
    bg = local_colour(rgb, (~unknown).astype(np.float32) - sure, sigma * scale)
    side = max(3, int(round(window * scale)) | 1)

    def windowed_residual(a: np.ndarray) -> np.ndarray:
        residual = np.linalg.norm(rgb - (a[..., None] * fg + (1.0 - a[..., None]) * bg), axis=2)
        return cv2.boxFilter(residual * unknown, -1, (side, side), normalize=False)

    better = windowed_residual(fit(alpha[y0:y1, x0:x1], cv2.INTER_AREA)) <= windowed_residual(hard)
    keep[y0:y1, x0:x1] = better if scale == 1.0 else cv2.resize(better.astype(np.uint8), (w, h),
                                                                 interpolation=cv2.INTER_NEAREST) > 0
    return keep


def guard_alpha(alpha: np.ndarray, mask: np.ndarray, band: np.ndarray, image: np.ndarray | None = None,
                reach: float = REACH, trust: float = ALPHA_TRUST) -> np.ndarray:
    """alpha float32 (H, W) made consistent with bool `mask` (see the module doc); `band` = the trimap's unknown;
    `image` uint8 (H, W, 3), when given, enables the compositing check (0)."""
    alpha = np.asarray(alpha, np.float32)
    binary = np.asarray(mask, bool)
    hard = binary.astype(np.float32)
    pixels = int(np.count_nonzero(band))
    if pixels == 0:
        return alpha
    if image is not None:
        alpha = np.where(band & ~explains_image(image, alpha, binary, band), hard, alpha)
    flipped = (alpha > 0.5) != binary
    if (abs(float(alpha[band].sum() - hard[band].sum())) > MAX_AREA_CHANGE * pixels
            or np.count_nonzero(flipped & band) > MAX_FLIPPED * pixels):
        return hard
    revert = flipped & (distance_to_boundary(binary.astype(np.uint8)) > reach)
    kept = np.where(revert, hard, alpha)
    return (hard + trust * (kept - hard)).astype(np.float32)
