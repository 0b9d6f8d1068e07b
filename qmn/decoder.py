"""Decoder: per layer dual-query cross-attention (the meld), joint self-attention over all queries, deformable
cross-attention to the image at each query's reference box, FFN, then iterative box refinement."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from qmn.deformable_attention import MSDeformAttn
from qmn.heads import BoxHead
from qmn.layers import MLP, box_sine_embedding
from qmn.queries import DualQueryCrossAttention, QuerySet


@dataclass
class DecoderOutput:
    hidden: list[Tensor]  # per layer (B, Q, C), after the shared output norm
    boxes: list[Tensor]  # per layer (B, Q, 4) refined boxes, cxcywh in [0, 1]


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, levels: int, points: int, dropout: float) -> None:
        super().__init__()
        self.dual_query = DualQueryCrossAttention(dim, heads, dropout)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MSDeformAttn(dim, levels, heads, points)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, tgt: Tensor, pos: Tensor, reference: Tensor, memory: Tensor, shapes: list[tuple[int, int]],
                queries: QuerySet, self_attn_mask: Tensor | None) -> Tensor:
        tgt = self.dual_query(tgt, pos, queries.num_learnable, queries.num_conditional)
        q = k = tgt + pos
        tgt = self.norm1(tgt + self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)[0])
        ref = reference[:, :, None, :].expand(-1, -1, len(shapes), -1)  # (B, Q, L, 4)
        tgt = self.norm2(tgt + self.cross_attn(tgt + pos, ref, memory, shapes))
        return self.norm3(tgt + self.ffn(tgt))


def prompted_attention_mask(num_matched: int, num_assigned: int, device: torch.device) -> Tensor | None:
    """(Q, Q) bool, True = blocked. Matched queries never see the assigned (prompted, denoising) ones (Mask DINO's
    denoising rule); an assigned query sees the matched queries and itself, not the other assigned ones."""
    if num_assigned == 0:
        return None
    q = num_matched + num_assigned
    mask = torch.zeros(q, q, dtype=torch.bool, device=device)
    mask[:, num_matched:] = True
    idx = torch.arange(num_matched, q, device=device)
    mask[idx, idx] = False
    return mask


class Decoder(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int, levels: int, points: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim, levels, points, dropout) for _ in range(layers))
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)
        self.norm = nn.LayerNorm(dim)
        self.box_head = BoxHead(dim)  # shared across layers (Mask DINO)
        self.dim = dim

    def forward(self, queries: QuerySet, memory: Tensor, shapes: list[tuple[int, int]]) -> DecoderOutput:
        tgt, reference = queries.content, queries.reference
        mask = prompted_attention_mask(queries.num_matched, queries.num_assigned, tgt.device)
        hidden, boxes = [], []
        for layer in self.layers:
            pos = self.ref_point_head(box_sine_embedding(reference, self.dim // 2))  # (B, Q, 2C) -> (B, Q, C)
            tgt = layer(tgt, pos, reference, memory, shapes, queries, mask)
            out = self.norm(tgt)
            refined = self.box_head(out, reference)
            hidden.append(out)
            boxes.append(refined)
            reference = refined.detach()
        return DecoderOutput(hidden, boxes)
