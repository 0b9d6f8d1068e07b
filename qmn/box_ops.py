"""Box format conversions and generalized IoU (as DETR's util/box_ops.py)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def box_cxcywh_to_xyxy(b: Tensor) -> Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(b: Tensor) -> Tensor:
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(b: Tensor) -> Tensor:
    return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)


def box_iou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU (N, M) and union (N, M) of xyxy boxes."""
    area_a, area_b = box_area(a), box_area(b)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1e-7), union


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise GIoU (N, M) of xyxy boxes (Rezatofighi et al. 2019)."""
    iou, union = box_iou(a, b)
    lt = torch.min(a[:, None, :2], b[None, :, :2])
    rb = torch.max(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing.clamp(min=1e-7)



def jitter_box(box: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """cxcywh box with its centre shifted by up to `noise` x half its size and its sides scaled by 1 +- `noise`
    (DN-DETR's box noise), clipped to (0, 1]."""
    cx, cy, w, h = box
    cx += rng.uniform(-noise, noise) * w / 2
    cy += rng.uniform(-noise, noise) * h / 2
    w *= 1 + rng.uniform(-noise, noise)
    h *= 1 + rng.uniform(-noise, noise)
    return np.clip(np.array([cx, cy, w, h], np.float32), 1e-3, 1.0)
