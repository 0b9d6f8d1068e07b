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
