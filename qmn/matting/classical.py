"""Weight-free matting fallback: pymatting's closed-form matting (Levin et al.) on the trimap.

pymatting compiles its kernels with numba on first import (~40 s, cached afterwards), so it is imported
only when a classical solve actually runs.
"""
from __future__ import annotations

import contextlib
import sys

import numpy as np

from qmn.matting.trimap import trimap_regions


def classical_alpha(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """Closed-form alpha float32 (h, w) in [0, 1] of image uint8 (h, w, 3) under trimap uint8 (h, w)."""
    background, unknown, foreground = trimap_regions(trimap)
    if not (unknown.any() and foreground.any() and background.any()):
        # closed-form matting needs both labels to anchor the solve; a band with one label takes that label
        fill = 1.0 if foreground.any() and not background.any() else 0.0
        return np.where(unknown, fill, foreground).astype(np.float32)
    from pymatting import estimate_alpha_cf

    pm_trimap = np.where(foreground, 1.0, np.where(background, 0.0, 0.5))
    with contextlib.redirect_stdout(sys.stderr):  # pymatting prints solver warnings; keep stdout for results (JSON)
        alpha = estimate_alpha_cf(image.astype(np.float64) / 255.0, pm_trimap)
    return np.clip(alpha, 0.0, 1.0).astype(np.float32)
