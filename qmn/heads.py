"""Prediction heads shared by every query and every decoder layer."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmn.layers import MLP, inverse_sigmoid


class ClassHead(nn.Module):
    """Open-vocabulary class logits: exp(logit_scale) * cos(proj(LN(q)), text) + bias (one logit per prompt)."""

    def __init__(self, dim: int, prior_prob: float = 0.01) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-math.log((1 - prior_prob) / prior_prob)))  # focal-loss prior

    def forward(self, queries: Tensor, text: Tensor) -> Tensor:
        """queries (B, Q, C), text (B, T, C) already projected and normalised -> logits (B, Q, T)."""
        q = F.normalize(self.proj(self.norm(queries)), dim=-1)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        return scale * torch.einsum("bqc,btc->bqt", q, text) + self.bias


class MaskHead(nn.Module):
    """Mask logits = mask_embed(q) . per-pixel embedding (stride 4)."""

    def __init__(self, dim: int, mask_dim: int) -> None:
        super().__init__()
        self.mask_embed = MLP(dim, dim, mask_dim, 3)

    def forward(self, queries: Tensor, mask_features: Tensor) -> Tensor:
        """queries (B, Q, C), mask_features (B, D, H/4, W/4) -> (B, Q, H/4, W/4)."""
        return torch.einsum("bqc,bchw->bqhw", self.mask_embed(queries), mask_features)


class BoxHead(nn.Module):
    """3-layer MLP predicting a delta on the reference box in inverse-sigmoid space (iterative refinement)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = MLP(dim, dim, 4, 3)
        nn.init.zeros_(self.mlp.layers[-1].weight)
        nn.init.zeros_(self.mlp.layers[-1].bias)

    def forward(self, queries: Tensor, reference: Tensor) -> Tensor:
        """reference (B, Q, 4) cxcywh in [0, 1] -> refined boxes (B, Q, 4) in [0, 1]."""
        return (self.mlp(queries) + inverse_sigmoid(reference)).sigmoid()
