"""Label denoising queries (DN-DETR, DINO, Mask DINO), training only.

Why: Hungarian matching reassigns queries between steps, which slows early training; a query handed a noised
ground-truth box and (sometimes wrong) class name, and asked for the true name, box and mask, gets a stable target
every step. With a wrong name it must read the image to correct it, which is exactly the skill the class head lacks
(docs/why_things.md). The name enters as its text embedding (open vocabulary: there is no fixed label table), scaled
to the size of a content feature, so denoising adds no weights and any checkpoint can train with or without it.
Denoising queries sit after the prompted ones and are attention-masked the same way (`qmn.decoder`): the matched
queries never see them, so inference is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from qmn.box_ops import jitter_box
from qmn.queries import empty_prompt_slots


@dataclass
class DenoisingPrompts:
    """Noised ground truth for one batch, padded to D per image."""

    boxes: Tensor  # (B, D, 4) cxcywh in [0, 1], noised
    labels: Tensor  # (B, D) long: index into the batch's prompt list, noised; 0 for padding
    valid: Tensor  # (B, D) bool

    def to(self, device: torch.device | str) -> "DenoisingPrompts":
        return DenoisingPrompts(*(getattr(self, f).to(device, non_blocking=True) for f in DenoisingPrompts.__dataclass_fields__))


def sample_denoising(targets: list[dict], max_per_image: int, label_noise: float, box_noise: float,
                     rng: np.random.Generator) -> tuple[DenoisingPrompts, Tensor] | None:
    """Up to `max_per_image` objects per image (a random subset): the box's centre shifted and sides scaled by up to
    `box_noise` of its size; with probability `label_noise` the name swapped for another name this image is supervised
    on (`text_valid`). Returns the noised prompts and, per query, the target it must reconstruct (B, D) (-1 = padding);
    None when off or no image has an object."""
    if max_per_image <= 0:
        return None
    chosen = [rng.permutation(len(t["labels"]))[:max_per_image] for t in targets]
    d = max((len(c) for c in chosen), default=0)
    if d == 0:
        return None
    boxes, valid, assign = empty_prompt_slots(len(targets), d)
    labels = torch.zeros(len(targets), d, dtype=torch.long)
    for i, (t, idx) in enumerate(zip(targets, chosen)):
        names = np.flatnonzero(t["text_valid"].numpy()) if "text_valid" in t else np.unique(t["labels"].numpy())
        for j, k in enumerate(idx):
            boxes[i, j] = torch.from_numpy(jitter_box(t["boxes"][k].numpy().copy(), rng, box_noise))
            label = int(t["labels"][k])
            others = names[names != label]
            if len(others) and rng.random() < label_noise:
                label = int(rng.choice(others))
            labels[i, j], valid[i, j], assign[i, j] = label, True, int(k)
    return DenoisingPrompts(boxes, labels, valid), assign


def denoising_content(text: Tensor, denoising: DenoisingPrompts) -> Tensor:
    """text (B, T, C) unit-norm prompt embeddings -> content (B, D, C): each query's (noised) name, scaled by sqrt(C)
    so its entries are ~1 like a layer-normed feature; zero for padding."""
    index = denoising.labels[..., None].expand(-1, -1, text.shape[-1])  # (B, D) -> (B, D, C)
    content = torch.gather(text, 1, index) * math.sqrt(text.shape[-1])
    return content * denoising.valid[..., None].to(content.dtype)
