"""The batched matcher costs equal the per-image formula they replaced (Mask2Former's, one image at a time)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from qmn.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from qmn.matcher import HungarianMatcher, batch_bce_cost, batch_dice_cost, focal_class_cost
from qmn.point_sampling import point_sample


def _per_image_cost(m: HungarianMatcher, logits, boxes, masks, target, coords) -> torch.Tensor:
    """The former per-image cost: two BCE-with-logits maps, each mask sampled on its own."""
    labels, tgt_boxes = target["labels"], target["boxes"]
    cost = m.class_weight * focal_class_cost(logits, labels, m.alpha, m.gamma)
    cost = cost + m.l1_weight * torch.cdist(boxes, tgt_boxes, p=1)
    cost = cost - m.giou_weight * generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt_boxes))
    pred = point_sample(masks[:, None], coords.expand(masks.shape[0], -1, -1))
    tgt = point_sample(target["masks"][:, None].float(), coords.expand(len(labels), -1, -1))
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    bce = (pos @ tgt.T + neg @ (1 - tgt).T) / pred.shape[1]
    mask_cost = m.bce_weight * bce + m.dice_weight * batch_dice_cost(pred, tgt)
    return cost + mask_cost * target["has_mask"][None].float()


def test_bce_cost_is_the_mean_pairwise_bce():
    g = torch.Generator().manual_seed(0)
    pred, tgt = torch.randn(5, 64, generator=g) * 4, (torch.rand(3, 64, generator=g) > 0.5).float()
    brute = torch.stack([torch.stack([F.binary_cross_entropy_with_logits(p, t) for t in tgt]) for p in pred])
    assert torch.allclose(batch_bce_cost(pred, tgt), brute, atol=1e-5)


def test_batched_costs_equal_the_per_image_formula():
    g = torch.Generator().manual_seed(1)
    matcher = HungarianMatcher(4.0, 5.0, 5.0, 5.0, 2.0, num_points=128)
    b, q, t = 3, 7, 4
    logits, boxes = torch.randn(b, q, t, generator=g), torch.rand(b, q, 4, generator=g) * 0.5 + 0.2
    masks = torch.randn(b, q, 8, 8, generator=g) * 3
    targets = []
    for m in (2, 0, 3):  # an image without objects in the middle shifts nothing
        targets.append({"labels": torch.randint(0, t, (m,), generator=g), "boxes": torch.rand(m, 4, generator=g) * 0.4 + 0.2,
                        "masks": torch.rand(m, 32, 32, generator=g) > 0.5, "has_mask": torch.tensor([True, False, True][:m])})
    torch.manual_seed(5)
    batched = matcher.cost_matrices(logits, boxes, masks, targets)
    torch.manual_seed(5)
    coords = (torch.rand(1, 1, 128, 2) * 2 - 1 + 1)[:, 0] / 2  # the same points, as xy in [0, 1]
    for i, target in enumerate(targets):
        assert batched[i].shape == (q, len(target["labels"]))
        if len(target["labels"]):
            assert torch.allclose(batched[i], _per_image_cost(matcher, logits[i], boxes[i], masks[i], target, coords),
                                  atol=1e-4)
    indices = matcher(logits, boxes, masks, targets)
    assert [len(r) for r, _ in indices] == [2, 0, 3]
