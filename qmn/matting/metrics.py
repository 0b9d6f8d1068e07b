"""Matting errors as defined by Rhemann et al. (alphamatting.com) and the Deep Image Matting evaluation code.

All take alphas in [0, 1] (H, W) and an optional `region` bool mask (H, W), usually the trimap's unknown band
(None = the whole image). SAD, Grad and Conn are reported divided by 1000, as the benchmarks print them.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

GRADIENT_SIGMA = 1.4
CONNECTIVITY_STEP = 0.1


def _prepare(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"matting metrics: pred {pred.shape} and gt {gt.shape} must be equal 2-D shapes")
    region = np.ones(gt.shape, bool) if region is None else np.asarray(region, bool)
    if region.shape != gt.shape:
        raise ValueError(f"matting metrics: region {region.shape} must match alpha {gt.shape}")
    return pred, gt, region


def sad(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> float:
    """Sum of absolute differences over `region`, in thousands."""
    pred, gt, region = _prepare(pred, gt, region)
    return float(np.abs(pred - gt)[region].sum() / 1000.0)


def mse(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> float:
    """Mean squared error over the pixels of `region`."""
    pred, gt, region = _prepare(pred, gt, region)
    return float(((pred - gt) ** 2)[region].mean()) if region.any() else 0.0


def gradient_error(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> float:
    """Sum over `region` of (|grad pred| - |grad gt|)^2, gradients by Gaussian first derivatives (sigma 1.4), /1000."""
    pred, gt, region = _prepare(pred, gt, region)

    def magnitude(a: np.ndarray) -> np.ndarray:
        gx = ndimage.gaussian_filter(a, GRADIENT_SIGMA, order=(0, 1))
        gy = ndimage.gaussian_filter(a, GRADIENT_SIGMA, order=(1, 0))
        return np.hypot(gx, gy)

    return float(((magnitude(pred) - magnitude(gt)) ** 2)[region].sum() / 1000.0)


def connectivity_error(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None,
                       step: float = CONNECTIVITY_STEP) -> float:
    """Rhemann et al. connectivity error (threshold step 0.1, 4-connected largest component), /1000."""
    pred, gt, region = _prepare(pred, gt, region)
    thresholds = np.arange(0.0, 1.0 + step / 2, step)
    level = np.full(gt.shape, -1.0)  # threshold at which a pixel first leaves the shared largest component
    four_connected = ndimage.generate_binary_structure(2, 1)
    for i in range(1, len(thresholds)):
        both = (pred >= thresholds[i]) & (gt >= thresholds[i])
        labels, count = ndimage.label(both, structure=four_connected)
        if count:
            sizes = np.bincount(labels.ravel())[1:]
            largest = labels == (1 + int(np.argmax(sizes)))
        else:
            largest = np.zeros_like(both)
        newly_disconnected = (level == -1) & ~largest
        level[newly_disconnected] = thresholds[i - 1]
    level[level == -1] = 1.0
    pred_d, gt_d = pred - level, gt - level
    pred_phi = 1.0 - pred_d * (pred_d >= 0.15)
    gt_phi = 1.0 - gt_d * (gt_d >= 0.15)
    return float(np.abs(pred_phi - gt_phi)[region].sum() / 1000.0)


def matting_errors(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> dict[str, float]:
    """All four errors: {"sad", "mse", "grad", "conn"}."""
    return {"sad": sad(pred, gt, region), "mse": mse(pred, gt, region),
            "grad": gradient_error(pred, gt, region), "conn": connectivity_error(pred, gt, region)}
