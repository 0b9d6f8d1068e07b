"""Region features for the class head: what a query's own box and mask look like (issue 11, docs/why_things.md).

A decoder query reads the image through a few deformable sampling points: enough for where an object is and what its
pixels look like, not for its outline. Probes of the trained model found a query's own predicted mask names its shape
(linear probe 0.71 on nine shapes) while the query's feature does not (0.10), so the class head could not learn names
that are shapes. As Mask R-CNN's box head reads RoIAlign-pooled features, each query's class logits here also see an
S x S pooling (2 x 2 bilinear samples per bin) of the per-pixel features and of its own mask at its own predicted box.
Box and mask are detached: the class loss teaches the pooled appearance, it does not reshape masks. The last layer
starts at zero, so a model is unchanged until it trains.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmn.box_ops import box_cxcywh_to_xyxy
from qmn.layers import MLP
from qmn.point_sampling import box_grid, box_sample


class RegionFeatures(nn.Module):
    def __init__(self, mask_dim: int, dim: int, size: int, channels: int = 32) -> None:
        super().__init__()
        self.size = size
        self.reduce = nn.Conv2d(mask_dim, channels, 1)
        self.embed = MLP((channels + 1) * size * size, dim, dim, 2)
        nn.init.zeros_(self.embed.layers[-1].weight)
        nn.init.zeros_(self.embed.layers[-1].bias)

    def pixel_features(self, mask_features: Tensor) -> Tensor:
        """(B, D, h, w) -> (B, c, h, w): once per image, shared by every decoder layer."""
        return self.reduce(mask_features)

    def forward(self, boxes: Tensor, masks: Tensor, pixels: Tensor) -> Tensor:
        """boxes (B, Q, 4) cxcywh in [0, 1] of the padded square, masks (B, Q, h, w) logits, pixels (B, c, h, w) from
        `pixel_features` -> (B, Q, C), to be added to the queries the class head reads."""
        b, q = boxes.shape[:2]
        grid = box_grid(box_cxcywh_to_xyxy(boxes.detach().to(pixels.dtype)), 2 * self.size)  # (B, Q, 2S, 2S, 2)
        appearance = box_sample(pixels, grid).flatten(0, 1)  # (B*Q, c, 2S, 2S)
        own_mask = box_sample(masks.detach().sigmoid().flatten(0, 1)[:, None].to(pixels.dtype),
                              grid.flatten(0, 1)[:, None])[:, 0]  # each query's own mask: (B*Q, 1, 2S, 2S)
        region = F.avg_pool2d(torch.cat([appearance, own_mask], 1), 2)  # (B*Q, c+1, S, S)
        return self.embed(region.flatten(1)).reshape(b, q, -1)  # (B*Q, (c+1)*S*S) -> (B, Q, C)
