"""Guard: a solved alpha may soften the mask, not overturn it; where the solver diverges the hard mask is kept.

Why: closed-form matting from a mask-made trimap bleeds where foreground and background colours overlap, flipping
whole parts of the band (alphamatting.com: up to 3x the hard mask's SAD on some photos). The mask is the decision the
user accepted, so: (1) a pixel farther than `reach` px from the mask's boundary whose alpha lands on the other side
of 0.5 than the mask gets the mask's value back; (2) when the alpha's area differs from the mask's by more than
MAX_AREA_CHANGE of the band, or disagrees with the mask's side on more than MAX_FLIPPED of the band, the solve is
rejected and the hard mask returned; (3) what is left is trusted ALPHA_TRUST: alpha = mask + ALPHA_TRUST (alpha -
mask), a shrinkage toward the user's mask that lowered SAD on every alphamatting photo where the solver was worse.
Constants were picked on alphamatting.com's 20 training photos (the only real matting set here), see
`bench/matting_eval.py`.
"""
from __future__ import annotations

import cv2
import numpy as np

MAX_AREA_CHANGE = 0.25  # |sum(alpha) - sum(mask)| / band pixels
MAX_FLIPPED = 0.3  # fraction of band pixels on the other side of 0.5 than the mask
REACH = 1.0  # px from the mask's boundary within which alpha may cross 0.5
ALPHA_TRUST = 0.8


def distance_to_boundary(binary: np.ndarray) -> np.ndarray:
    """float32 (H, W) distance of every pixel to the nearest pixel on the other side of the mask's boundary."""
    inside = cv2.distanceTransform(binary.astype(np.uint8), cv2.DIST_L2, 5)
    outside = cv2.distanceTransform((1 - binary).astype(np.uint8), cv2.DIST_L2, 5)
    return np.where(binary > 0, inside, outside)


def guard_alpha(alpha: np.ndarray, mask: np.ndarray, band: np.ndarray, reach: float = REACH,
                trust: float = ALPHA_TRUST) -> np.ndarray:
    """alpha float32 (H, W) made consistent with bool `mask` (see the module doc); `band` = the trimap's unknown."""
    alpha = np.asarray(alpha, np.float32)
    binary = np.asarray(mask, bool)
    hard = binary.astype(np.float32)
    pixels = int(np.count_nonzero(band))
    if pixels == 0:
        return alpha
    flipped = (alpha > 0.5) != binary
    if (abs(float(alpha[band].sum() - hard[band].sum())) > MAX_AREA_CHANGE * pixels
            or np.count_nonzero(flipped & band) > MAX_FLIPPED * pixels):
        return hard
    revert = flipped & (distance_to_boundary(binary.astype(np.uint8)) > reach)
    kept = np.where(revert, hard, alpha)
    return (hard + trust * (kept - hard)).astype(np.float32)
