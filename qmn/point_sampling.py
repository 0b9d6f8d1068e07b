"""Point-sampled mask supervision (PointRend / Mask2Former): compare masks at a few thousand points, not all pixels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(masks: Tensor, coords: Tensor) -> Tensor:
    """masks (N, 1, H, W), coords (N, P, 2) xy in [0, 1] -> values (N, P), bilinear."""
    return F.grid_sample(masks, 2.0 * coords[:, :, None, :] - 1.0, align_corners=False)[:, 0, :, 0]


def uncertain_point_coords(logits: Tensor, num_points: int, oversample_ratio: float, importance_ratio: float,
                           generator: torch.Generator | None = None) -> Tensor:
    """Mostly points where the prediction is least certain (|logit| small), plus uniform random ones. (N, P, 2)."""
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=logits.device, generator=generator)
    uncertainty = -point_sample(logits.detach(), coords).abs()  # (N, num_sampled)
    num_uncertain = int(importance_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices  # (N, num_uncertain)
    chosen = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    rand = torch.rand(n, num_points - num_uncertain, 2, device=logits.device, generator=generator)
    return torch.cat([chosen, rand], 1)


def box_grid(boxes: Tensor, size: int) -> Tensor:
    """boxes (..., 4) xyxy in [0, 1] -> (..., size, size, 2) xy in [0, 1]: the centres of a size x size grid of bins
    over each box (RoIAlign's sampling points, one per bin)."""
    steps = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size  # (S,)
    x0, y0, x1, y1 = boxes[..., None, None, :].unbind(-1)  # each (..., 1, 1)
    xs = x0 + (x1 - x0) * steps[None, :]  # (..., 1, S)
    ys = y0 + (y1 - y0) * steps[:, None]  # (..., S, 1)
    return torch.stack(torch.broadcast_tensors(xs, ys), -1)


def box_sample(features: Tensor, grid: Tensor) -> Tensor:
    """features (N, C, H, W), grid (N, R, S, S, 2) xy in [0, 1] from `box_grid` -> (N, R, C, S, S), bilinear.
    A grid_sample, not torchvision's roi_align: its CPU backward is several times faster here."""
    n, r, s = grid.shape[:3]
    out = F.grid_sample(features, 2.0 * grid.reshape(n, r * s, s, 2) - 1.0, align_corners=False)  # (N, C, R*S, S)
    return out.reshape(n, -1, r, s, s).transpose(1, 2)
