"""Set criterion (DETR / Mask DINO): focal class loss, L1 + GIoU box loss, dice + BCE mask loss on uncertainty-sampled
points; deep supervision on every decoder layer ("aux_i") and on the encoder proposals ("interm"). Box-only annotations
skip the mask terms. Prompted queries are assigned to their own object, without matching."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmn.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from qmn.config import QMNConfig
from qmn.matcher import HungarianMatcher
from qmn.point_sampling import point_sample, uncertain_point_coords


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise focal loss (RetinaNet); callers sum and normalise."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-mask dice loss (N,) of logits (N, P) against binary targets (N, P)."""
    p = logits.sigmoid()
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


class SetCriterion(nn.Module):
    def __init__(self, cfg: QMNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.matcher = HungarianMatcher(cfg.class_weight, cfg.mask_bce_weight, cfg.dice_weight, cfg.box_l1_weight,
                                        cfg.giou_weight, cfg.num_mask_points, cfg.focal_alpha, cfg.focal_gamma)
        self.weight_dict = {"loss_class": cfg.class_weight, "loss_bbox": cfg.box_l1_weight, "loss_giou": cfg.giou_weight,
                            "loss_mask": cfg.mask_bce_weight, "loss_dice": cfg.dice_weight}

    # --- the three loss families, given (batch, query) -> target pairs ---------------------------------------------
    def loss_class(self, logits: Tensor, indices: list[tuple[Tensor, Tensor]], targets: list[dict], num: float) -> Tensor:
        onehot = torch.zeros_like(logits)
        for b, (q, t) in enumerate(indices):
            onehot[b, q, targets[b]["labels"][t]] = 1.0
        return sigmoid_focal_loss(logits, onehot, self.cfg.focal_alpha, self.cfg.focal_gamma).sum() / num

    def loss_boxes(self, boxes: Tensor, indices: list[tuple[Tensor, Tensor]], targets: list[dict], num: float) -> dict:
        src = torch.cat([boxes[b, q] for b, (q, _) in enumerate(indices)])
        tgt = torch.cat([targets[b]["boxes"][t] for b, (_, t) in enumerate(indices)])
        if len(src) == 0:
            zero = boxes.sum() * 0
            return {"loss_bbox": zero, "loss_giou": zero}
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt)))
        return {"loss_bbox": F.l1_loss(src, tgt, reduction="sum") / num, "loss_giou": (1 - giou).sum() / num}

    def loss_masks(self, masks: Tensor, indices: list[tuple[Tensor, Tensor]], targets: list[dict]) -> dict:
        keep = [(b, q[targets[b]["has_mask"][t]], t[targets[b]["has_mask"][t]]) for b, (q, t) in enumerate(indices)]
        src = torch.cat([masks[b, q] for b, q, _ in keep])  # (N, h, w) logits
        if len(src) == 0:
            zero = masks.sum() * 0
            return {"loss_mask": zero, "loss_dice": zero}
        tgt = torch.cat([targets[b]["masks"][t] for b, _, t in keep]).float()  # (N, H, W)
        coords = uncertain_point_coords(src[:, None].float(), self.cfg.num_mask_points, self.cfg.oversample_ratio,
                                        self.cfg.importance_sample_ratio)
        pred = point_sample(src[:, None].float(), coords)
        with torch.no_grad():
            gt = point_sample(tgt[:, None], coords)
        num = float(len(src))
        return {"loss_mask": F.binary_cross_entropy_with_logits(pred, gt, reduction="none").mean(1).sum() / num,
                "loss_dice": dice_loss(pred, gt).sum() / num}

    def layer_losses(self, logits: Tensor, boxes: Tensor, masks: Tensor | None, indices, targets, num: float) -> dict:
        losses = {"loss_class": self.loss_class(logits, indices, targets, num)}
        losses.update(self.loss_boxes(boxes, indices, targets, num))
        if masks is not None:
            losses.update(self.loss_masks(masks, indices, targets))
        return losses

    # --- the whole criterion ------------------------------------------------------------------------------------
    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        """outputs: per-layer lists "logits"/"boxes"/"masks" over matched queries, "interm" proposals, and
        "prompted" per-layer outputs with "prompt_targets" (B, P) target indices (-1 = padding)."""
        num = max(float(sum(len(t["labels"]) for t in targets)), 1.0)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            n = torch.tensor([num], device=outputs["logits"][-1].device)
            torch.distributed.all_reduce(n)
            num = max(n.item() / torch.distributed.get_world_size(), 1.0)
        losses: dict[str, Tensor] = {}
        layers = len(outputs["logits"])
        for i in range(layers):
            suffix = "" if i == layers - 1 else f"_aux{i}"
            logits, boxes, masks = outputs["logits"][i], outputs["boxes"][i], outputs["masks"][i]
            if logits.shape[1]:
                indices = self.matcher(logits, boxes, masks, targets)
                for k, v in self.layer_losses(logits, boxes, masks, indices, targets, num).items():
                    losses[k + suffix] = v
        interm = outputs.get("interm")
        if interm is not None:
            indices = self.matcher(interm["pred_logits"], interm["pred_boxes"], None, targets)
            for k, v in self.layer_losses(interm["pred_logits"], interm["pred_boxes"], None, indices, targets, num).items():
                losses[k + "_interm"] = v
        prompted = outputs.get("prompted")
        if prompted is not None:
            assign = outputs["prompt_targets"]  # (B, P)
            indices = [(torch.nonzero(row >= 0)[:, 0], row[row >= 0]) for row in assign.cpu()]
            num_prompted = max(float(sum(len(q) for q, _ in indices)), 1.0)
            for i in range(len(prompted["logits"])):
                suffix = "_prompt" if i == len(prompted["logits"]) - 1 else f"_prompt_aux{i}"
                layer = self.layer_losses(prompted["logits"][i], prompted["boxes"][i], prompted["masks"][i], indices,
                                          targets, num_prompted)
                for k, v in layer.items():
                    losses[k + suffix] = v
        weighted = [v * self.weight_dict[k.split("_aux")[0].split("_interm")[0].split("_prompt")[0]] for k, v in losses.items()]
        losses["loss"] = torch.stack(weighted).sum()
        return losses
