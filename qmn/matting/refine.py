"""`refine`: turn a hard mask into a soft alpha matte (hair, fur) with the bundled network or pymatting.

method "auto" uses the given `model`, else the bundled checkpoint when present, loadable and recorded as
beating the hard mask on held-out scenes, else the classical closed-form solver; "network" uses the bundled
checkpoint regardless of that record; "none" returns the mask as 0 / 1 floats.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from qmn.matting.band import solve_in_band
from qmn.matting.checkpoint import BUNDLED_CHECKPOINT, beats_hard_mask, load_matting_model
from qmn.matting.classical import classical_alpha
from qmn.matting.network import MattingNet
from qmn.matting.guard import guard_alpha
from qmn.matting.trimap import adaptive_trimap, make_trimap, trimap_onehot, trimap_regions

METHODS = ("auto", "network", "classical", "none")
NETWORK_MARGIN = 32  # context px around the band for the network
CLASSICAL_MARGIN = 8  # the closed-form solve only needs a rim of known pixels
CLASSICAL_WORK_SIZE = 512


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) from uint8 (H, W), (H, W, 3) or (H, W, 4)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[..., :3])
    raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")


@functools.lru_cache(maxsize=1)
def bundled_model() -> MattingNet | None:
    """The bundled network, or None (with a warning if the file exists but cannot be loaded)."""
    if not BUNDLED_CHECKPOINT.is_file():
        return None
    try:
        return load_matting_model(BUNDLED_CHECKPOINT)
    except ValueError as exc:
        warnings.warn(f"matting: using the classical fallback; {exc}", stacklevel=2)
        return None


def network_solver(model: MattingNet):
    """A band solver running `model` on one crop: (image uint8 (h,w,3), trimap (h,w)) -> alpha (h,w)."""

    @torch.inference_mode()
    def solve(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, h, w)
        onehot = torch.from_numpy(trimap_onehot(trimap))[None]  # (1, 3, h, w)
        return model(x, onehot)[0, 0].numpy()

    return solve


def alpha_from_trimap(image: np.ndarray, trimap: np.ndarray, model: MattingNet | None = None,
                      method: str = "auto") -> np.ndarray:
    """Alpha float32 (H, W) in [0, 1] for a trimap (H, W) uint8 0 / 128 / 255; exact 0 / 1 where known."""
    if method not in METHODS:
        raise ValueError(f"matting method must be one of {', '.join(METHODS)}, got {method!r}")
    rgb = as_rgb(image)
    trimap = np.asarray(trimap)
    if trimap.shape != rgb.shape[:2]:
        raise ValueError(f"trimap shape {trimap.shape} does not match image size {rgb.shape[:2]}")
    if method == "none":
        return (trimap >= 128).astype(np.float32)
    if method == "auto" and model is None and beats_hard_mask():
        model = bundled_model()
    if method == "network" and model is None:
        model = bundled_model()
        if model is None:
            raise ValueError(f"{BUNDLED_CHECKPOINT}: no loadable matting network; use method='classical'")
    if method == "classical" or model is None:
        return solve_in_band(rgb, trimap, classical_alpha, CLASSICAL_WORK_SIZE, CLASSICAL_MARGIN)
    return solve_in_band(rgb, trimap, network_solver(model), model.cfg.work_size, NETWORK_MARGIN)


def refine(image: np.ndarray, mask: np.ndarray, trimap_width: int | None = None, model: MattingNet | None = None,
           method: str = "auto", soft: np.ndarray | None = None, guard: bool = True) -> np.ndarray:
    """Soft alpha float32 (H, W) in [0, 1] for `mask` (H, W) on `image`. The trimap band is `trimap_width` px on each
    side of the boundary, or by default where the mask is uncertain (`adaptive_trimap`: ragged parts, and uncertain
    pixels of the model's `soft` mask); with `guard` the solve cannot overturn the mask (`guard_alpha`)."""
    mask = np.asarray(mask)
    if mask.shape != np.shape(image)[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image size {np.shape(image)[:2]}")
    if method == "none":
        return (mask > 0.5).astype(np.float32) if mask.dtype != bool else mask.astype(np.float32)
    trimap = adaptive_trimap(mask, soft) if trimap_width is None else make_trimap(mask, trimap_width)
    alpha = alpha_from_trimap(image, trimap, model=model, method=method)
    return guard_alpha(alpha, mask > 0.5, trimap_regions(trimap)[1], as_rgb(image)) if guard else alpha
