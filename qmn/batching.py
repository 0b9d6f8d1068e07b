"""From `Sample`s to model tensors: image resize + pad + normalise, the batch's prompt list, targets, and the
ground-truth box / click prompts used to train prompted queries (Mask DINO's denoising recipe)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from qmn.config import QMNConfig
from qmn.data.sample import Sample
from qmn.queries import Prompts

FOREGROUND_PROMPT = "foreground"


@dataclass
class PreparedImage:
    tensor: Tensor  # (3, S, S) normalised, zero padded at the bottom / right
    scale: float  # model pixels per original pixel
    valid_hw: tuple[int, int]  # (h, w) of the image inside the padded square
    original_hw: tuple[int, int]


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any numpy image (gray, gray+alpha, RGB, RGBA; uint8, uint16 or float in [0, 1]) -> (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0 or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"expected an image array (H, W) or (H, W, 1-4), got shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif np.issubdtype(image.dtype, np.floating):
        image = (np.clip(np.nan_to_num(image), 0, 1) * 255 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] in (2, 4):  # drop alpha
        image = image[..., :-1]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def prepare_image(image: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> PreparedImage:
    """Resize the long side to `size` (aspect kept), normalise, pad to a `size` x `size` square."""
    image = to_rgb_uint8(image)
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x = (torch.from_numpy(np.array(image, copy=True)).float().permute(2, 0, 1) / 255.0 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    padded = torch.zeros(3, size, size)
    padded[:, :nh, :nw] = x
    return PreparedImage(padded, scale, (nh, nw), (h, w))


@dataclass
class Batch:
    images: Tensor  # (B, 3, S, S)
    texts: list[str]  # the batch's prompt list: every target's text + sampled negatives
    targets: list[dict]  # labels (M,), boxes (M, 4) cxcywh in [0, 1], masks (M, S, S) bool, has_mask (M,)
    prompts: Prompts | None  # ground-truth objects given as box / click prompts
    prompt_targets: Tensor | None  # (B, P) target index per prompted query, -1 = padding

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda d: {k: v.to(device, non_blocking=True) for k, v in d.items()}  # noqa: E731
        prompts = None
        if self.prompts is not None:
            prompts = Prompts(*(getattr(self.prompts, f).to(device) for f in Prompts.__dataclass_fields__))
        return Batch(self.images.to(device, non_blocking=True), self.texts, [move(t) for t in self.targets], prompts,
                     None if self.prompt_targets is None else self.prompt_targets.to(device))


def annotation_text(sample: Sample, ann, rng: np.random.Generator) -> str:
    """The text a target is trained against: a random phrase for referring data, "foreground" for that task."""
    if sample.task == "foreground":
        return FOREGROUND_PROMPT
    phrases = ann.extra.get("phrases") if ann.extra else None
    if sample.task == "referring" and phrases:
        return str(phrases[rng.integers(len(phrases))])
    return ann.text


def _resize_mask(mask: np.ndarray, scale: float, size: int) -> np.ndarray:
    h, w = mask.shape
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.zeros((size, size), bool)
    if (nh, nw) != (h, w):
        mask = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
    out[:nh, :nw] = mask
    return out


def _jitter_box(box: np.ndarray, rng: np.random.Generator, noise: float = 0.2) -> np.ndarray:
    """cxcywh box with centre shifted and sides scaled by up to `noise` of the box size (DN-DETR box noise)."""
    cx, cy, w, h = box
    cx += rng.uniform(-noise, noise) * w / 2
    cy += rng.uniform(-noise, noise) * h / 2
    w *= 1 + rng.uniform(-noise, noise)
    h *= 1 + rng.uniform(-noise, noise)
    return np.clip(np.array([cx, cy, w, h], np.float32), 1e-3, 1.0)


def sample_prompts(targets: list[dict], max_per_image: int, rng: np.random.Generator) -> tuple[Prompts, Tensor] | None:
    """Pick up to `max_per_image` objects with masks per image and turn each into a jittered box (1/2), a jittered box
    plus a positive click (1/4) or a positive click alone with a small box around it (1/4); seeded by `rng`."""
    if max_per_image <= 0:
        return None
    chosen = []
    for t in targets:
        with_mask = np.nonzero(t["has_mask"].numpy())[0]
        chosen.append(rng.permutation(with_mask)[:max_per_image])
    p = max((len(c) for c in chosen), default=0)
    if p == 0:
        return None
    b = len(targets)
    boxes = torch.zeros(b, p, 4)
    boxes[..., 2:] = 0.1
    valid = torch.zeros(b, p, dtype=torch.bool)
    from_box = torch.ones(b, p, dtype=torch.bool)
    points = torch.zeros(b, p, 1, 2)
    labels = torch.full((b, p, 1), -1, dtype=torch.long)
    assign = torch.full((b, p), -1, dtype=torch.long)
    for i, (t, idx) in enumerate(zip(targets, chosen)):
        size = t["masks"].shape[-1]
        for j, k in enumerate(idx):
            kind = rng.random()
            mask = t["masks"][k].numpy()
            ys, xs = np.nonzero(mask)
            pick = rng.integers(len(xs))
            click = np.array([(xs[pick] + 0.5) / size, (ys[pick] + 0.5) / size], np.float32)
            if kind < 0.75:
                boxes[i, j] = torch.from_numpy(_jitter_box(t["boxes"][k].numpy().copy(), rng))
            else:
                boxes[i, j] = torch.tensor([click[0], click[1], 0.1, 0.1])
                from_box[i, j] = False
            if kind >= 0.5:
                points[i, j, 0] = torch.from_numpy(click)
                labels[i, j, 0] = 1
            valid[i, j] = True
            assign[i, j] = int(k)
    return Prompts(boxes, valid, from_box, points, labels), assign


def collate(samples: list[Sample], cfg: QMNConfig, rng: np.random.Generator | None = None) -> Batch:
    """Stack samples (any size; resized + padded to cfg.image_size) and build targets over one shared prompt list."""
    rng = rng or np.random.default_rng(0)
    size = cfg.image_size
    images, per_image = [], []
    texts: dict[str, int] = {}
    for s in samples:
        prep = prepare_image(s.image, size, cfg.pixel_mean, cfg.pixel_std)
        images.append(prep.tensor)
        labels, boxes, masks, has_mask = [], [], [], []
        for ann in s.annotations:
            if ann.iscrowd:
                continue
            box = np.asarray(ann.box, np.float32) * prep.scale
            mask = None if ann.mask is None else _resize_mask(ann.mask, prep.scale, size)
            if mask is not None:
                if not mask.any():
                    continue
                ys, xs = np.nonzero(mask)
                box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            text = annotation_text(s, ann, rng)
            labels.append(texts.setdefault(text, len(texts)))
            boxes.append([(box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size,
                          (box[2] - box[0]) / size, (box[3] - box[1]) / size])
            masks.append(np.zeros((size, size), bool) if mask is None else mask)
            has_mask.append(mask is not None)
        per_image.append({
            "labels": torch.tensor(labels, dtype=torch.long),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, size, size, dtype=torch.bool),
            "has_mask": torch.tensor(has_mask, dtype=torch.bool),
        })
    vocabulary = sorted({v for s in samples for v in s.vocabulary if v not in texts})
    for word in rng.permutation(vocabulary)[:cfg.num_negative_prompts] if vocabulary else []:
        texts.setdefault(str(word), len(texts))
    if not texts:
        texts[FOREGROUND_PROMPT] = 0  # an image with no objects still needs one prompt to score against
    sampled = sample_prompts(per_image, cfg.num_prompted_train, rng)
    prompts, assign = sampled if sampled else (None, None)
    return Batch(torch.stack(images), list(texts), per_image, prompts, assign)
