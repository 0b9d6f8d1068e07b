"""Matting training loss: L1 over the image + L1 over the unknown band + Laplacian-pyramid L1 (as in AEMatter)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LAPLACIAN_LEVELS = 5


def _gauss_kernel(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """5x5 binomial kernel (1, 1, 5, 5) used to build the pyramid."""
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype)
    k2 = torch.outer(k1, k1)
    return (k2 / k2.sum()).view(1, 1, 5, 5)


def laplacian_pyramid(x: torch.Tensor, levels: int = LAPLACIAN_LEVELS) -> list[torch.Tensor]:
    """Band-pass images of x (B, 1, H, W): `levels` differences between a level and its blurred upsample."""
    kernel = _gauss_kernel(x.device, x.dtype)
    bands, current = [], x
    for _ in range(levels):
        blurred = F.conv2d(F.pad(current, (2, 2, 2, 2), mode="replicate"), kernel)
        down = blurred[..., ::2, ::2]
        up = F.interpolate(down, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = down
    return bands


def laplacian_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over pyramid levels of 2^level * mean |band(pred) - band(target)| (coarse structure weighs more)."""
    return sum((2 ** i) * F.l1_loss(p, t) for i, (p, t) in enumerate(zip(laplacian_pyramid(pred),
                                                                         laplacian_pyramid(target))))


def matting_losses(pred: torch.Tensor, target: torch.Tensor, unknown: torch.Tensor) -> dict[str, torch.Tensor]:
    """pred, target, unknown: (B, 1, H, W). Returns named scalar losses; "loss" is their sum."""
    l1 = F.l1_loss(pred, target)
    unknown_l1 = (torch.abs(pred - target) * unknown).sum() / unknown.sum().clamp(min=1.0)
    lap = laplacian_loss(pred, target)
    return {"l1": l1, "unknown_l1": unknown_l1, "laplacian": lap, "loss": l1 + unknown_l1 + lap}
