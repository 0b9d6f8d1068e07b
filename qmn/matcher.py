"""Hungarian matching over ALL matched queries (learnable and conditional alike: no query-type split, paper §3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from qmn.box_ops import box_cxcywh_to_xyxy, generalized_box_iou


def focal_class_cost(logits: Tensor, labels: Tensor, alpha: float, gamma: float) -> Tensor:
    """(Q, T) logits, (M,) labels -> (Q, M) cost (Deformable DETR)."""
    p = logits.sigmoid()
    neg = (1 - alpha) * p.pow(gamma) * -(1 - p + 1e-8).log()
    pos = alpha * (1 - p).pow(gamma) * -(p + 1e-8).log()
    return pos[:, labels] - neg[:, labels]


def batch_dice_cost(pred: Tensor, target: Tensor) -> Tensor:
    """pred logits (Q, P), target (M, P) -> (Q, M) dice loss of every pair."""
    p = pred.sigmoid()
    numerator = 2 * p @ target.T
    denominator = p.sum(-1)[:, None] + target.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def batch_bce_cost(pred: Tensor, target: Tensor) -> Tensor:
    """pred logits (Q, P), target (M, P) -> (Q, M) mean BCE of every pair.

    BCE(x, 1) = softplus(-x) = softplus(x) - x, so sum_p BCE = sum_p softplus(x) - x . t: one softplus, one matmul."""
    return (F.softplus(pred).sum(-1, keepdim=True) - pred @ target.T) / pred.shape[1]


class HungarianMatcher(nn.Module):
    """The costs of every image are computed together (one sampling of all masks, one set of matrix products): on a
    CPU the per-image loop of small ops cost more than the arithmetic. Pairs across images are cut away after."""

    def __init__(self, class_weight: float, mask_bce_weight: float, dice_weight: float, box_l1_weight: float,
                 giou_weight: float, num_points: int, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.class_weight, self.bce_weight, self.dice_weight = class_weight, mask_bce_weight, dice_weight
        self.l1_weight, self.giou_weight = box_l1_weight, giou_weight
        self.num_points, self.alpha, self.gamma = num_points, alpha, gamma

    def cost_matrices(self, logits: Tensor, boxes: Tensor, masks: Tensor | None, targets: list[dict]) -> list[Tensor]:
        """logits (B, Q, T) over the batch's shared prompts, boxes (B, Q, 4) cxcywh, masks (B, Q, h, w) logits ->
        per image its (Q, M_b) cost."""
        b, q = logits.shape[:2]
        sizes = [len(t["labels"]) for t in targets]
        labels = torch.cat([t["labels"] for t in targets])
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).float()
        flat_boxes = boxes.flatten(0, 1).float()  # (B*Q, 4)
        cost = self.class_weight * focal_class_cost(logits.flatten(0, 1).float(), labels, self.alpha, self.gamma)
        cost = cost + self.l1_weight * torch.cdist(flat_boxes, tgt_boxes, p=1)
        cost = cost - self.giou_weight * generalized_box_iou(box_cxcywh_to_xyxy(flat_boxes), box_cxcywh_to_xyxy(tgt_boxes))
        has_mask = torch.cat([t["has_mask"] for t in targets])
        if masks is not None and has_mask.any():
            grid = torch.rand(1, 1, self.num_points, 2, device=masks.device) * 2 - 1  # the same points for every mask
            # queries and targets as channels: one bilinear weight per point, shared by all of them
            pred = F.grid_sample(masks.float(), grid.expand(b, -1, -1, -1), align_corners=False)  # (B, Q, 1, P)
            tgt_masks = torch.cat([t["masks"] for t in targets]).float()[None]  # (1, sum M, H, W)
            tgt = F.grid_sample(tgt_masks, grid, align_corners=False)[0, :, 0]  # (sum M, P)
            pred = pred.flatten(0, 2)  # (B*Q, P)
            mask_cost = self.bce_weight * batch_bce_cost(pred, tgt) + self.dice_weight * batch_dice_cost(pred, tgt)
            cost = cost + mask_cost * has_mask[None, :].float()  # box-only targets: no mask cost
        cost = cost.view(b, q, -1)  # (B, Q, sum M)
        return [c[:, start:start + m] for c, start, m in zip(cost, [sum(sizes[:i]) for i in range(b)], sizes)]

    def cost_matrix(self, logits: Tensor, boxes: Tensor, masks: Tensor | None, target: dict) -> Tensor:
        """One image: logits (Q, T), boxes (Q, 4) cxcywh, masks (Q, h, w) logits -> (Q, M) cost."""
        return self.cost_matrices(logits[None], boxes[None], None if masks is None else masks[None], [target])[0]

    @torch.no_grad()
    def forward(self, logits: Tensor, boxes: Tensor, masks: Tensor | None, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """Batched predictions (B, Q, ...) -> per image (query indices, target indices)."""
        empty = torch.zeros(0, dtype=torch.long)
        if sum(len(t["labels"]) for t in targets) == 0:
            return [(empty, empty) for _ in targets]
        indices = []
        for cost in self.cost_matrices(logits, boxes, masks, targets):
            if cost.shape[1] == 0:
                indices.append((empty, empty))
                continue
            rows, cols = linear_sum_assignment(cost.cpu().nan_to_num(1e6).numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return indices
