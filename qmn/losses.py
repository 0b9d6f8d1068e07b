"""Set criterion (DETR / Mask DINO): focal class loss, L1 + GIoU box loss, dice + BCE mask loss on uncertainty-sampled
points; deep supervision on every decoder layer ("_i") and on the encoder proposals ("interm"). Box-only annotations
skip the mask terms. Prompted and denoising queries are assigned to their own object, without matching."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmn.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from qmn.config import QMNConfig
from qmn.matcher import HungarianMatcher
from qmn.outputs import LayerOutputs, QueryMeldOutput
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


LOSS_NAMES = ("loss_class", "loss_bbox", "loss_giou", "loss_mask", "loss_dice")


def loss_suffixes(dec_layers: int) -> list[str]:
    """Every family of loss terms, as DETR names them: "" (last decoder layer), "_0".."_{L-2}" (earlier layers),
    "_interm" (encoder proposals), "_prompt" and "_prompt_0".. (prompted queries, per layer), "_dn" and "_dn_0"..
    (denoising queries, per layer)."""
    aux = [f"_{i}" for i in range(dec_layers - 1)]
    return ["", *aux, "_interm", *(f"_{kind}{a}" for kind in ("prompt", "dn") for a in ("", *aux))]


def global_mean_counts(counts: list[float], device: torch.device) -> list[float]:
    """Loss normalisers (DETR's num_boxes): each count's mean over the DDP ranks, at least 1, in one all-reduce, so
    every rank divides by the same number whatever its own images hold."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        n = torch.tensor([float(c) for c in counts], device=device)
        torch.distributed.all_reduce(n)
        counts = (n / torch.distributed.get_world_size()).tolist()
    return [max(float(c), 1.0) for c in counts]


class SetCriterion(nn.Module):
    def __init__(self, cfg: QMNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.matcher = HungarianMatcher(cfg.class_weight, cfg.mask_bce_weight, cfg.dice_weight, cfg.box_l1_weight,
                                        cfg.giou_weight, cfg.num_mask_points, cfg.focal_alpha, cfg.focal_gamma)
        base = dict(zip(LOSS_NAMES, (cfg.class_weight, cfg.box_l1_weight, cfg.giou_weight, cfg.mask_bce_weight,
                                     cfg.dice_weight)))
        # every term the criterion can return -> its weight in "loss" (a term missing here is a bug, not a zero)
        if cfg.name_loss_weight > 0:
            base["loss_name"] = cfg.name_loss_weight
        self.weight_dict: dict[str, float] = {name + suffix: w for suffix in loss_suffixes(cfg.dec_layers)
                                              for name, w in base.items()}

    # --- the three loss families, given (batch, query) -> target pairs ---------------------------------------------
    def loss_class(self, logits: Tensor, indices: list[tuple[Tensor, Tensor]], targets: list[dict], num: float) -> Tensor:
        onehot = torch.zeros_like(logits)
        for b, (q, t) in enumerate(indices):
            onehot[b, q, targets[b]["labels"][t]] = 1.0
        loss = sigmoid_focal_loss(logits, onehot, self.cfg.focal_alpha, self.cfg.focal_gamma)
        if all("text_valid" in t for t in targets):  # only the prompts known true / false for each image (collate)
            loss = loss * torch.stack([t["text_valid"] for t in targets])[:, None, :].to(loss.dtype)
        return loss.sum() / num

    def loss_name(self, logits: Tensor, indices: list[tuple[Tensor, Tensor]], targets: list[dict], num: float) -> Tensor:
        """Softmax cross-entropy over the prompts known true / false for the image (its `text_valid`), the target's
        own text being the answer: the focal term barely separates names that share a direction (a wrong shape name
        scores as low as the right one early, so focal down-weights it); this asks which name."""
        rows, labels = [], []
        for b, (q, t) in enumerate(indices):
            if len(q) == 0:
                continue
            row = logits[b, q].float()  # (n, T)
            if "text_valid" in targets[b]:
                row = row.masked_fill(~targets[b]["text_valid"].bool()[None], -1e4)
            rows.append(row)
            labels.append(targets[b]["labels"][t])
        if not rows:
            return logits.sum() * 0
        return F.cross_entropy(torch.cat(rows), torch.cat(labels), reduction="sum") / num

    def loss_boxes(self, boxes: Tensor, indices: list[tuple[Tensor, Tensor]], targets: list[dict], num: float) -> dict:
        src = torch.cat([boxes[b, q] for b, (q, _) in enumerate(indices)])
        tgt = torch.cat([targets[b]["boxes"][t] for b, (_, t) in enumerate(indices)])
        if len(src) == 0:
            zero = boxes.sum() * 0
            return {"loss_bbox": zero, "loss_giou": zero}
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt)))
        return {"loss_bbox": F.l1_loss(src, tgt, reduction="sum") / num, "loss_giou": (1 - giou).sum() / num}

    def loss_masks(self, masks: Tensor, indices: list[tuple[Tensor, Tensor]], targets: list[dict], num: float) -> dict:
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
        return {"loss_mask": F.binary_cross_entropy_with_logits(pred, gt, reduction="none").mean(1).sum() / num,
                "loss_dice": dice_loss(pred, gt).sum() / num}

    def layer_losses(self, logits: Tensor, boxes: Tensor, masks: Tensor | None, indices, targets, num: float,
                     num_masks: float) -> dict:
        losses = {"loss_class": self.loss_class(logits, indices, targets, num)}
        if self.cfg.name_loss_weight > 0:
            losses["loss_name"] = self.loss_name(logits, indices, targets, num)
        losses.update(self.loss_boxes(boxes, indices, targets, num))
        if masks is not None:
            losses.update(self.loss_masks(masks, indices, targets, num_masks))
        return losses

    # --- the whole criterion ------------------------------------------------------------------------------------
    def forward(self, outputs: QueryMeldOutput, targets: list[dict], prompt_targets: Tensor | None = None,
                denoising_targets: Tensor | None = None) -> dict[str, Tensor]:
        """One Hungarian matching per layer over all matched queries (learnable and conditional as one set); prompted
        and denoising queries take their target from `prompt_targets` (B, P) / `denoising_targets` (B, D) (-1 =
        padding). Returns every term and "loss"."""
        num, num_masks = global_mean_counts([sum(len(t["labels"]) for t in targets),
                                             sum(int(t["has_mask"].sum()) for t in targets)], outputs.layers[-1].logits.device)
        losses: dict[str, Tensor] = {}
        last = len(outputs.layers) - 1
        for i, layer in enumerate(outputs.layers):
            losses.update(self.matched_losses(layer.select(outputs.matched), targets, num, num_masks,
                                              "" if i == last else f"_{i}"))
        if outputs.interm is not None:
            losses.update(self.matched_losses(outputs.interm, targets, num, num_masks, "_interm"))
        if outputs.num_prompted and prompt_targets is not None:
            losses.update(self.assigned_losses(outputs, outputs.prompted, prompt_targets, targets, "_prompt"))
        if outputs.num_denoising and denoising_targets is not None:
            losses.update(self.assigned_losses(outputs, outputs.denoising, denoising_targets, targets, "_dn"))
        losses["loss"] = torch.stack([v * self.weight_dict[k] for k, v in losses.items()]).sum()
        return losses

    def assigned_losses(self, outputs: QueryMeldOutput, queries: slice, assign: Tensor, targets: list[dict],
                        family: str) -> dict[str, Tensor]:
        """Every layer's terms for queries that each have their own target (`assign` (B, Q'), -1 = padding)."""
        indices = [(torch.nonzero(row >= 0)[:, 0], row[row >= 0]) for row in assign.cpu()]
        count, = global_mean_counts([sum(len(q) for q, _ in indices)], assign.device)  # same on every DDP rank
        last = len(outputs.layers) - 1
        losses = {}
        for i, layer in enumerate(outputs.layers):
            p = layer.select(queries)
            suffix = family if i == last else f"{family}_{i}"
            terms = self.layer_losses(p.logits, p.boxes, p.masks, indices, targets, count, count)
            losses.update({k + suffix: v for k, v in terms.items()})
        return losses

    def matched_losses(self, out: LayerOutputs, targets: list[dict], num: float, num_masks: float,
                       suffix: str) -> dict[str, Tensor]:
        indices = self.matcher(out.logits, out.boxes, out.masks, targets)
        terms = self.layer_losses(out.logits, out.boxes, out.masks, indices, targets, num, num_masks)
        return {k + suffix: v for k, v in terms.items()}
