"""Small building blocks shared by the encoder, query meld and decoder."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """Plain multi-layer perceptron with ReLU between layers (DETR's box / mask-embedding MLP)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_sine_embedding(boxes: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """Sine embedding of normalized cxcywh boxes (..., 4) -> (..., 4 * num_feats), as DINO's gen_sineembed."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos = boxes[..., None].float() * 2 * math.pi / dim_t  # (..., 4, F)
    pos = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)  # (..., 4, F)
    # DINO orders (y, x, w, h)
    pos = torch.cat([pos[..., 1, :], pos[..., 0, :], pos[..., 2, :], pos[..., 3, :]], dim=-1)
    return pos.to(boxes.dtype)


def sine_position_2d(h: int, w: int, num_feats: int, device: torch.device, temperature: float = 10000.0) -> Tensor:
    """DETR's 2-D sine positional encoding for an h x w grid -> (h * w, 2 * num_feats)."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    px = xs[:, None] / dim_t  # (w, F)
    py = ys[:, None] / dim_t  # (h, F)
    px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)
    py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat([py[:, None, :].expand(h, w, -1), px[None, :, :].expand(h, w, -1)], dim=-1)
    return pos.reshape(h * w, 2 * num_feats)
