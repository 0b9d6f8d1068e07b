"""From `Sample`s to model tensors: image resize + pad + normalise, the batch's prompt list, targets, and the
ground-truth box / click prompts used to train prompted queries (Mask DINO's denoising recipe)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from qmn.box_ops import jitter_box
from qmn.click_sim import simulate_clicks
from qmn.config import QMNConfig
from qmn.data.sample import Sample
from qmn.denoising import DenoisingPrompts, sample_denoising
from qmn.queries import Prompts, empty_prompt_slots

FOREGROUND_PROMPT = "foreground"
TRAIN_MAX_CLICKS = 4  # clicks per simulated interactive session in training (the first one positive)
PROMPT_BOX_NOISE = 0.2  # a user's box is off by up to 20% of the object's size


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


OPEN_TEXT_TASKS = ("referring",)  # targets named by free phrases: the dataset's class names are not negatives


def text_validity(sample: Sample, texts: list[str], own_texts: set[str]) -> Tensor:
    """(T,) bool: the batch prompts this image's queries are supervised on (positive or negative).

    The prompt list is shared by the batch, but a prompt is a *negative* only where it is known to be false: its own
    targets' texts, and, unless its targets are free phrases (referring), the names of its own vocabulary (a closed
    label set: an object of the image is none of the names it is not labelled with). Another image's phrase or
    "foreground", or a class name next to a referring image, says nothing certain about this image's objects (a referred
    "the red circle" IS a "circle"; a panoptic circle IS "foreground"), so no loss is put on those pairs."""
    known = set(own_texts)
    if sample.task not in OPEN_TEXT_TASKS:
        known.update(sample.vocabulary)
    return torch.tensor([t in known for t in texts], dtype=torch.bool)


@dataclass
class Batch:
    images: Tensor  # (B, 3, S, S)
    texts: list[str]  # the batch's prompt list: every target's text + sampled negatives
    targets: list[dict]  # labels (M,), boxes (M, 4) cxcywh in [0, 1], masks (M, S, S) bool, has_mask (M,),
    # text_valid (T,) bool: the prompts this image's class loss is computed on (`text_validity`)
    prompts: Prompts | None  # ground-truth objects given as box / click prompts
    prompt_targets: Tensor | None  # (B, P) target index per prompted query, -1 = padding
    denoising: DenoisingPrompts | None = None  # noised ground truth for the denoising queries (cfg.num_denoising)
    denoising_targets: Tensor | None = None  # (B, D) target index per denoising query, -1 = padding

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda d: {k: v.to(device, non_blocking=True) for k, v in d.items()}  # noqa: E731
        maybe = lambda x: None if x is None else x.to(device)  # noqa: E731
        return Batch(self.images.to(device, non_blocking=True), self.texts, [move(t) for t in self.targets],
                     maybe(self.prompts), maybe(self.prompt_targets), maybe(self.denoising), maybe(self.denoising_targets))


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


def sample_prompts(targets: list[dict], max_per_image: int, rng: np.random.Generator,
                   max_clicks: int = TRAIN_MAX_CLICKS) -> tuple[Prompts, Tensor] | None:
    """Pick up to `max_per_image` objects with masks per image and turn each into a jittered box (1/2), a jittered box
    plus clicks (1/4) or clicks alone with a small box around the first (1/4); seeded by `rng`. Clicks are a simulated
    interactive session (`qmn.click_sim.simulate_clicks`): a positive click inside the object, then up to
    `max_clicks - 1` positive / negative clicks in the errors of a simulated previous prediction, so the negative
    click embedding is trained too."""
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
    boxes, valid, assign = empty_prompt_slots(b, p)
    from_box = torch.ones(b, p, dtype=torch.bool)
    points = torch.zeros(b, p, max_clicks, 2)
    labels = torch.full((b, p, max_clicks), -1, dtype=torch.long)
    for i, (t, idx) in enumerate(zip(targets, chosen)):
        size = t["masks"].shape[-1]
        for j, k in enumerate(idx):
            kind = rng.random()
            if kind < 0.75:
                boxes[i, j] = torch.from_numpy(jitter_box(t["boxes"][k].numpy().copy(), rng, PROMPT_BOX_NOISE))
            if kind >= 0.5:
                clicks, _ = simulate_clicks(t["masks"][k].numpy(), rng, max_clicks)
                for c, (x, y, positive) in enumerate(clicks):
                    points[i, j, c] = torch.tensor([x / size, y / size])
                    labels[i, j, c] = int(positive)
                if kind >= 0.75:
                    boxes[i, j] = torch.tensor([clicks[0][0] / size, clicks[0][1] / size, 0.1, 0.1])
                    from_box[i, j] = False
            valid[i, j] = True
            assign[i, j] = int(k)
    return Prompts(boxes, valid, from_box, points, labels), assign


def collate(samples: list[Sample], cfg: QMNConfig, rng: np.random.Generator | None = None) -> Batch:
    """Stack samples (any size; resized + padded to cfg.image_size) and build targets over one shared prompt list."""
    rng = rng or np.random.default_rng(0)
    size = cfg.image_size
    images, per_image = [], []
    texts: dict[str, int] = {}
    own: list[set[str]] = []  # per sample: the texts of its own targets
    for s in samples:
        own.append(set())
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
            own[-1].add(text)
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
    per_image_negatives = cfg.negatives_per_image
    vocabulary = sorted({v for s in samples if not per_image_negatives or s.task not in OPEN_TEXT_TASKS
                         for v in s.vocabulary if v not in texts})
    for word in rng.permutation(vocabulary)[:cfg.num_negative_prompts] if vocabulary else []:
        texts.setdefault(str(word), len(texts))
    if not texts:
        texts[FOREGROUND_PROMPT] = 0  # an image with no objects still needs one prompt to score against
    for s, target, own_texts in zip(samples, per_image, own):
        target["text_valid"] = (text_validity(s, list(texts), own_texts)
                                if per_image_negatives else torch.ones(len(texts), dtype=torch.bool))
    sampled = sample_prompts(per_image, cfg.num_prompted_train, rng)
    prompts, assign = sampled if sampled else (None, None)
    noised = sample_denoising(per_image, cfg.num_denoising, cfg.denoising_label_noise, cfg.denoising_box_noise, rng)
    denoising, denoising_targets = noised if noised else (None, None)
    return Batch(torch.stack(images), list(texts), per_image, prompts, assign, denoising, denoising_targets)
