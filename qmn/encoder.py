"""Multi-scale deformable transformer encoder + the stride-4 per-pixel embedding for masks.

Mask2Former calls this part the pixel decoder: backbone maps at strides 8/16/32 (+ one extra stride-64 level) are
projected to `hidden_dim`, refined jointly by deformable self-attention, and the stride-8 output is fused with the
stride-4 backbone map to give the per-pixel mask embedding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmn.deformable_attention import MSDeformAttn
from qmn.layers import sine_position_2d

NUM_LEVELS = 4  # memory levels: backbone strides 8/16/32 + one extra stride-64 level


@dataclass
class EncoderOutput:
    memory: Tensor  # (B, S, C) tokens of all levels, S = sum(h * w)
    pos: Tensor  # (B, S, C) positional + level embedding
    spatial_shapes: list[tuple[int, int]]  # (h, w) per level, strides 8, 16, 32, 64
    mask_features: Tensor  # (B, mask_dim, H/4, W/4) per-pixel embedding

    def level_map(self, level: int) -> Tensor:
        """Memory of one level as a (B, C, h, w) map."""
        start = sum(h * w for h, w in self.spatial_shapes[:level])
        h, w = self.spatial_shapes[level]
        return self.memory[:, start:start + h * w].transpose(1, 2).reshape(self.memory.shape[0], -1, h, w)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, levels: int, heads: int, points: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, reference: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        src = self.norm1(src + self.dropout(self.self_attn(src + pos, reference, src, shapes)))
        return self.norm2(src + self.dropout(self.ffn(src)))


def _reference_points(shapes: list[tuple[int, int]], levels: int, device: torch.device) -> Tensor:
    """Cell centres of every token, normalised, repeated for each level it samples: (1, S, L, 2)."""
    pts = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                                torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
        pts.append(torch.stack([(xs.reshape(-1) + 0.5) / w, (ys.reshape(-1) + 0.5) / h], -1))
    return torch.cat(pts, 0)[None, :, None, :].expand(1, -1, levels, 2)


class MultiScaleEncoder(nn.Module):
    def __init__(self, in_channels: list[int], dim: int, ffn_dim: int, layers: int, heads: int,
                 points: int, mask_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        # in_channels: backbone channels at strides 4, 8, 16, 32
        if len(in_channels) != 4:
            raise ValueError("the encoder expects 4 backbone maps (strides 4/8/16/32)")
        levels = self.levels = NUM_LEVELS
        self.input_proj = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(32 if dim % 32 == 0 else 8, dim)) for c in in_channels[1:]]
            + [nn.Sequential(nn.Conv2d(in_channels[-1], dim, 3, stride=2, padding=1), nn.GroupNorm(32 if dim % 32 == 0 else 8, dim))]
        )
        self.level_embed = nn.Parameter(torch.randn(levels, dim) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(dim, ffn_dim, levels, heads, points, dropout) for _ in range(layers))
        norm_groups = 32 if dim % 32 == 0 else 8
        self.lateral = nn.Sequential(nn.Conv2d(in_channels[0], dim, 1), nn.GroupNorm(norm_groups, dim))
        self.output = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(norm_groups, dim), nn.ReLU(inplace=True))
        self.mask_features = nn.Conv2d(dim, mask_dim, 1)
        self.dim = dim

    def forward(self, feats: list[Tensor]) -> EncoderOutput:
        """feats: backbone maps at strides 4/8/16/32."""
        maps = [proj(f) for proj, f in zip(self.input_proj[:-1], feats[1:])] + [self.input_proj[-1](feats[-1])]
        shapes = [(m.shape[2], m.shape[3]) for m in maps]
        src = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)  # (B, S, C)
        pos = torch.cat([sine_position_2d(h, w, self.dim // 2, src.device) + self.level_embed[i]
                         for i, (h, w) in enumerate(shapes)], 0)[None].to(src.dtype)
        reference = _reference_points(shapes, self.levels, src.device).to(src.dtype)
        for layer in self.layers:
            src = layer(src, pos, reference, shapes)
        out = EncoderOutput(src, pos.expand(src.shape[0], -1, -1), shapes, src)
        stride8 = out.level_map(0)
        fused = self.lateral(feats[0]) + F.interpolate(stride8, size=feats[0].shape[-2:], mode="bilinear", align_corners=False)
        out.mask_features = self.mask_features(self.output(fused))
        return out
