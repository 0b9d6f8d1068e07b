"""Hungarian matching over ALL matched queries (learnable and conditional alike: no query-type split, paper §3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from qmn.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from qmn.point_sampling import point_sample


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
    """pred logits (Q, P), target (M, P) -> (Q, M) mean BCE of every pair."""
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    return (pos @ target.T + neg @ (1 - target).T) / pred.shape[1]


class HungarianMatcher(nn.Module):
    def __init__(self, class_weight: float, mask_bce_weight: float, dice_weight: float, box_l1_weight: float,
                 giou_weight: float, num_points: int, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.class_weight, self.bce_weight, self.dice_weight = class_weight, mask_bce_weight, dice_weight
        self.l1_weight, self.giou_weight = box_l1_weight, giou_weight
        self.num_points, self.alpha, self.gamma = num_points, alpha, gamma

    def cost_matrix(self, logits: Tensor, boxes: Tensor, masks: Tensor | None, target: dict) -> Tensor:
        """One image: logits (Q, T), boxes (Q, 4) cxcywh, masks (Q, h, w) logits -> (Q, M) cost."""
        labels, tgt_boxes = target["labels"], target["boxes"]
        cost = self.class_weight * focal_class_cost(logits, labels, self.alpha, self.gamma)
        cost = cost + self.l1_weight * torch.cdist(boxes, tgt_boxes, p=1)
        cost = cost - self.giou_weight * generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt_boxes))
        has_mask = target["has_mask"]
        if masks is not None and has_mask.any():
            coords = torch.rand(1, self.num_points, 2, device=masks.device)
            pred = point_sample(masks[:, None].float(), coords.expand(masks.shape[0], -1, -1))  # (Q, P)
            tgt = point_sample(target["masks"][:, None].float(), coords.expand(len(labels), -1, -1))  # (M, P)
            mask_cost = self.bce_weight * batch_bce_cost(pred, tgt) + self.dice_weight * batch_dice_cost(pred, tgt)
            cost = cost + mask_cost * has_mask[None, :].float()  # box-only targets: no mask cost
        return cost

    @torch.no_grad()
    def forward(self, logits: Tensor, boxes: Tensor, masks: Tensor | None, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """Batched predictions (B, Q, ...) -> per image (query indices, target indices)."""
        indices = []
        for b, target in enumerate(targets):
            if len(target["labels"]) == 0:
                empty = torch.zeros(0, dtype=torch.long)
                indices.append((empty, empty))
                continue
            cost = self.cost_matrix(logits[b].float(), boxes[b].float(), None if masks is None else masks[b], target)
            rows, cols = linear_sum_assignment(cost.cpu().nan_to_num(1e6).numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return indices
