"""QUERY MELD (paper §3.2): learnable queries + conditional queries selected from encoder proposals, the dual-query
cross-attention that lets the two groups inform each other, and prompted queries made from a user's boxes and clicks.

Query layout everywhere: [learnable (N) | conditional (K) | prompted (P) | denoising (D)]. Learnable and conditional
queries are "matched" queries (one Hungarian matching over all of them); prompted queries and, in training, the
denoising queries (`qmn.denoising`) are assigned to their own object.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from qmn.box_ops import box_cxcywh_to_xyxy
from qmn.heads import BoxHead, ClassHead
from qmn.layers import inverse_sigmoid
from qmn.outputs import LayerOutputs

QUERY_TYPES = ("learnable", "conditional", "prompted")


@dataclass
class QuerySet:
    """The decoder's input queries in the layout [learnable (N) | conditional (K) | prompted (P) | denoising (D)]."""

    content: Tensor  # (B, N + K + P + D, C)
    reference: Tensor  # (B, N + K + P + D, 4) cxcywh in [0, 1]; learnable anchors keep their gradient, proposals are detached
    num_learnable: int
    num_conditional: int
    num_prompted: int
    num_denoising: int = 0

    @property
    def num_matched(self) -> int:
        return self.num_learnable + self.num_conditional

    @property
    def num_assigned(self) -> int:
        """Prompted + denoising queries: each has its own object, none is seen by the matched queries."""
        return self.num_prompted + self.num_denoising


@dataclass
class Prompts:
    """User / training prompts for one batch, padded to P per image."""

    boxes: Tensor  # (B, P, 4) cxcywh in [0, 1]
    valid: Tensor  # (B, P) bool
    from_box: Tensor  # (B, P) bool: True = a box prompt, False = a click that made its own small box
    points: Tensor  # (B, P, M, 2) xy in [0, 1]: clicks attached to each prompt
    point_labels: Tensor  # (B, P, M) long: 1 positive, 0 negative, -1 padding

    def to(self, device: torch.device | str) -> "Prompts":
        return Prompts(*(getattr(self, f).to(device, non_blocking=True) for f in Prompts.__dataclass_fields__))


def empty_prompt_slots(batch: int, slots: int) -> tuple[Tensor, Tensor, Tensor]:
    """Padded per-image prompt slots: boxes (B, S, 4) (a 0.1 x 0.1 placeholder box at the corner), valid (B, S) all False,
    target index (B, S) all -1; the samplers fill the slots they use."""
    boxes = torch.zeros(batch, slots, 4)
    boxes[..., 2:] = 0.1
    return boxes, torch.zeros(batch, slots, dtype=torch.bool), torch.full((batch, slots), -1, dtype=torch.long)


def encoder_anchors(shapes: list[tuple[int, int]], device: torch.device) -> Tensor:
    """One anchor box per encoder token: cell centre, w = h = 0.05 * 2^level (Mask DINO). (S, 4) cxcywh."""
    anchors = []
    for level, (h, w) in enumerate(shapes):
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                                torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
        centre = torch.stack([(xs.reshape(-1) + 0.5) / w, (ys.reshape(-1) + 0.5) / h], -1)
        size = torch.full_like(centre, 0.05 * 2.0 ** level)
        anchors.append(torch.cat([centre, size], -1))
    return torch.cat(anchors, 0)


class ConditionalQueries(nn.Module):
    """Mask DINO two-stage selection: every encoder token proposes a box and a class embedding scored against the
    prompts; the top-K tokens by their best prompt score become queries (content = token, reference = its box)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.enc_output = nn.Linear(dim, dim)
        self.enc_norm = nn.LayerNorm(dim)
        self.class_head = ClassHead(dim)
        self.box_head = BoxHead(dim)

    def forward(self, memory: Tensor, shapes: list[tuple[int, int]], text: Tensor,
                k: int) -> tuple[Tensor, Tensor, LayerOutputs]:
        """memory (B, S, C), text (B, T, C) -> content (B, K, C) (not detached: the caller detaches it for the decoder
        and gives it to the mask head for the interm mask loss), reference (B, K, 4), proposals for the interm loss."""
        tokens = self.enc_norm(self.enc_output(memory))
        logits = self.class_head(tokens, text)  # (B, S, T)
        anchors = encoder_anchors(shapes, memory.device)[None].expand(memory.shape[0], -1, -1).to(memory.dtype)
        boxes = self.box_head(tokens, anchors)  # (B, S, 4)
        k = min(k, memory.shape[1])
        top = logits.max(-1).values.topk(k, dim=1).indices  # (B, K)
        gather = lambda x: torch.gather(x, 1, top[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
        proposals = LayerOutputs(gather(logits), gather(boxes), None)
        return gather(tokens), proposals.boxes.detach(), proposals


class LearnableQueries(nn.Module):
    """N content embeddings with learnable anchor boxes (OpenSeeD's stuff queries, without the stuff label)."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__()
        self.content = nn.Embedding(num, dim)
        self.anchor = nn.Embedding(num, 4)  # inverse-sigmoid cxcywh
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            centres = torch.rand(num, 2, generator=g) * 0.8 + 0.1
            self.anchor.weight.copy_(inverse_sigmoid(torch.cat([centres, torch.full((num, 2), 0.3)], -1)))

    def forward(self, batch: int) -> tuple[Tensor, Tensor]:
        return self.content.weight[None].expand(batch, -1, -1), self.anchor.weight.sigmoid()[None].expand(batch, -1, -1)


class PromptedQueries(nn.Module):
    """A user's box is a conditional query: reference = the box, content = encoder memory RoI-pooled inside it.
    Clicks add a learned positive / negative embedding plus the memory feature at the click."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.box_proj = nn.Linear(dim, dim)
        self.point_proj = nn.Linear(dim, dim)
        self.type_embed = nn.Embedding(4, dim)  # 0 box, 1 click-made box, 2 negative click, 3 positive click

    def forward(self, feature_map: Tensor, prompts: Prompts) -> Tensor:
        """feature_map (B, C, h, w) stride-8 memory -> content (B, P, C)."""
        b, p = prompts.valid.shape
        h, w = feature_map.shape[-2:]
        scale = torch.tensor([w, h, w, h], dtype=feature_map.dtype, device=feature_map.device)
        rois = [box_cxcywh_to_xyxy(prompts.boxes[i]) * scale for i in range(b)]
        pooled = roi_align(feature_map, rois, output_size=4, spatial_scale=1.0, aligned=True)  # (B*P, C, 4, 4)
        content = self.box_proj(pooled.mean((2, 3)).view(b, p, -1))
        content = content + self.type_embed((~prompts.from_box).long())
        if prompts.points.shape[2]:
            grid = prompts.points * 2 - 1  # (B, P, M, 2)
            feats = F.grid_sample(feature_map, grid, align_corners=False).permute(0, 2, 3, 1)  # (B, P, M, C)
            labels = prompts.point_labels
            point_embed = self.point_proj(feats) + self.type_embed(2 + labels.clamp(min=0))
            content = content + (point_embed * (labels >= 0)[..., None]).sum(2)
        return content


class DualQueryCrossAttention(nn.Module):
    """Q_L <- LN(Q_L + MHA_LC(Q_L+P_L, Q_C+P_C, Q_C));  Q_C <- LN(Q_C + MHA_CL(Q_C+P_C, Q_L+P_L, Q_L)).

    Both updates read the tensors from before either update. Prompted and denoising queries take part on the
    conditional side as queries only, so the learnable queries never see them.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.learnable_from_conditional = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.conditional_from_learnable = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_learnable = nn.LayerNorm(dim)
        self.norm_conditional = nn.LayerNorm(dim)

    def forward(self, tgt: Tensor, pos: Tensor, num_learnable: int, num_conditional: int) -> Tensor:
        n, k = num_learnable, num_conditional
        if n == 0 or tgt.shape[1] == n:
            return tgt
        ql, pl = tgt[:, :n], pos[:, :n]
        qc, pc = tgt[:, n:], pos[:, n:]  # conditional + prompted + denoising
        out_c = self.norm_conditional(qc + self.conditional_from_learnable(qc + pc, ql + pl, ql, need_weights=False)[0])
        if k == 0:
            return torch.cat([ql, out_c], 1)
        matched_c, matched_pc = qc[:, :k], pc[:, :k]
        out_l = self.norm_learnable(ql + self.learnable_from_conditional(ql + pl, matched_c + matched_pc, matched_c,
                                                                         need_weights=False)[0])
        return torch.cat([out_l, out_c], 1)
