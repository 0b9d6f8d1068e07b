"""Post-processing of one image's decoder outputs into a `Prediction`, per task (Mask2Former / Mask DINO rules).

Inputs are the last decoder layer: class probabilities (Q, T), mask logits (Q, h, w) at stride 4 of the padded
square, boxes (Q, 4) cxcywh of the padded square. Masks are upsampled to the original size only for kept queries.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qmn.box_ops import box_cxcywh_to_xyxy
from qmn.structures import Prediction, Segment


@dataclass
class RawOutput:
    probs: Tensor  # (Q, T) sigmoid class probabilities
    mask_logits: Tensor  # (Q, h, w)
    boxes: Tensor  # (Q, 4) cxcywh in [0, 1] of the padded square
    query_types: list[str]  # per query
    input_size: int  # padded square side, model pixels
    valid_hw: tuple[int, int]  # image inside the square, model pixels
    original_hw: tuple[int, int]


def _upsample(raw: RawOutput, logits: Tensor) -> Tensor:
    """(N, h, w) logits at stride 4 of the square -> (N, H, W) at the original image size."""
    if logits.shape[0] == 0:
        return logits.new_zeros((0, *raw.original_hw))
    stride = raw.input_size / logits.shape[-1]
    vh, vw = (int(np.ceil(v / stride)) for v in raw.valid_hw)
    crop = logits[:, :vh, :vw]
    return F.interpolate(crop[None].float(), size=raw.original_hw, mode="bilinear", align_corners=False)[0]


def _box_xyxy(raw: RawOutput, idx: int) -> np.ndarray:
    scale = raw.input_size * raw.original_hw[1] / raw.valid_hw[1]
    box = box_cxcywh_to_xyxy(raw.boxes[idx].float()) * scale
    h, w = raw.original_hw
    return np.clip(box.cpu().numpy(), 0, [w, h, w, h]).astype(np.float32)


def _mask_box(mask: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return fallback
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _segment(raw: RawOutput, q: int, label: str, score: float, mask: np.ndarray | None, seg_id: int) -> Segment:
    box = _box_xyxy(raw, q)
    if mask is not None:
        box = _mask_box(mask, box)
    return Segment(label=label, score=float(score), mask=mask, box=box, query_type=raw.query_types[q], query_index=q, id=seg_id)


def _mask_scores(probs_masks: Tensor, binary: Tensor) -> Tensor:
    """Mean foreground probability inside each binary mask (Mask2Former's mask score)."""
    return (probs_masks * binary).flatten(1).sum(1) / binary.flatten(1).sum(1).clamp(min=1)


def instances(raw: RawOutput, prompts: list[str], threshold: float, with_masks: bool = True, top_k: int = 100) -> list[Segment]:
    """Top-k (query, prompt) pairs over all queries; a query may answer several prompts."""
    q, t = raw.probs.shape
    scores, flat = raw.probs.flatten().topk(min(top_k, q * t))
    keep = scores > threshold
    scores, flat = scores[keep], flat[keep]
    queries, labels = flat // t, flat % t
    if not with_masks:
        return [_segment(raw, int(qi), prompts[int(li)], float(s), None, i + 1)
                for i, (qi, li, s) in enumerate(zip(queries, labels, scores))]
    masks = _upsample(raw, raw.mask_logits[queries]).sigmoid()
    binary = masks > 0.5
    final = scores * _mask_scores(masks, binary)
    out = []
    for qi, li, s, m in zip(queries, labels, final, binary):
        if s > threshold and m.any():
            out.append(_segment(raw, int(qi), prompts[int(li)], float(s), m.cpu().numpy(), len(out) + 1))
    return out


def panoptic(raw: RawOutput, prompts: list[str], threshold: float, overlap: float = 0.8) -> tuple[list[Segment], np.ndarray]:
    """Things and stuff from the same queries: each pixel goes to argmax of score * mask; a segment is dropped when
    the pixels it won are < `overlap` of its own mask >= 0.5."""
    scores, labels = raw.probs.max(-1)
    keep = torch.nonzero(scores > threshold)[:, 0]
    h, w = raw.original_hw
    panoptic_map = np.zeros((h, w), np.int32)
    if len(keep) == 0:
        return [], panoptic_map
    masks = _upsample(raw, raw.mask_logits[keep]).sigmoid()  # (K, H, W)
    owner = (scores[keep][:, None, None] * masks).argmax(0)
    segments = []
    for i, qi in enumerate(keep.tolist()):
        own = masks[i] >= 0.5
        won = (owner == i) & own
        area, original = int(won.sum()), int(own.sum())
        if area == 0 or original == 0 or area / original < overlap:
            continue
        seg_id = len(segments) + 1
        won_np = won.cpu().numpy()
        panoptic_map[won_np] = seg_id
        segments.append(_segment(raw, qi, prompts[int(labels[qi])], float(scores[qi]), won_np, seg_id))
    return segments, panoptic_map


def semantic(raw: RawOutput, prompts: list[str], threshold: float) -> tuple[list[Segment], np.ndarray]:
    """Per prompt: sum over queries of class probability * mask probability; each pixel takes the best prompt, or -1
    (no class) where even the best prompt's score is below `threshold` (threshold 0 labels every pixel)."""
    masks = raw.mask_logits.sigmoid()  # (Q, h, w)
    per_class = torch.einsum("qt,qhw->thw", raw.probs, masks)
    full = _upsample(raw, per_class)  # (T, H, W); bilinear on class scores
    best, semantic_map = full.max(0)
    semantic_map = torch.where(best.clamp(max=1.0) < threshold, -1, semantic_map).cpu().numpy().astype(np.int32)
    segments = []
    for t, label in enumerate(prompts):
        m = semantic_map == t
        if m.any():
            q = int(raw.probs[:, t].argmax())
            score = float(full[t][torch.from_numpy(m)].mean().clamp(max=1.0))
            segments.append(_segment(raw, q, label, score, m, len(segments) + 1))
    return segments, semantic_map


def referring(raw: RawOutput, phrases: list[str]) -> list[Segment]:
    """One mask per phrase: the best-scoring query's."""
    best = raw.probs.argmax(0)  # (T,)
    masks = _upsample(raw, raw.mask_logits[best]) > 0
    return [_segment(raw, int(best[t]), phrase, float(raw.probs[best[t], t]), masks[t].cpu().numpy(), t + 1)
            for t, phrase in enumerate(phrases)]


def foreground(raw: RawOutput, threshold: float) -> list[Segment]:
    """One binary mask: the union of confident queries' masks (the best query's when none is confident)."""
    scores = raw.probs[:, 0]
    keep = torch.nonzero(scores > threshold)[:, 0]
    if len(keep) == 0:
        keep = scores.argmax()[None]
    union = (_upsample(raw, raw.mask_logits[keep]) > 0).any(0).cpu().numpy()
    best = int(keep[scores[keep].argmax()])
    return [_segment(raw, best, "foreground", float(scores[keep].max()), union, 1)]


def prompted(raw: RawOutput, prompts: list[str], first: int, labelled: bool,
             clip_boxes: list[np.ndarray | None] | None = None, margin: float = 0.1) -> list[Segment]:
    """One segment per prompted query (indices >= first); labelled with the best text prompt when there are any.
    A box prompt's mask is cut to its box grown by `margin` of its size: the user drew the object's extent."""
    idx = torch.arange(first, raw.probs.shape[0])
    masks = _upsample(raw, raw.mask_logits[idx]).sigmoid()
    h, w = raw.original_hw
    out = []
    for i, q in enumerate(idx.tolist()):
        binary = masks[i] > 0.5
        box = clip_boxes[i] if clip_boxes else None
        if box is not None:
            dx, dy = margin * (box[2] - box[0]), margin * (box[3] - box[1])
            x0, y0 = max(0, int(box[0] - dx)), max(0, int(box[1] - dy))
            x1, y1 = min(w, int(np.ceil(box[2] + dx))), min(h, int(np.ceil(box[3] + dy)))
            inside = torch.zeros_like(binary)
            inside[y0:y1, x0:x1] = True
            binary &= inside
        if labelled:
            t = int(raw.probs[q].argmax())
            label, score = prompts[t], float(raw.probs[q, t])
        else:
            label, score = "object", float(_mask_scores(masks[i:i + 1], binary[None])[0])
        out.append(_segment(raw, q, label, score, binary.cpu().numpy(), i + 1))
    return out


def postprocess(raw: RawOutput, task: str, prompts: list[str], threshold: float) -> Prediction:
    pred = Prediction(task=task, prompts=list(prompts), image_size=raw.original_hw)
    if task == "panoptic":
        pred.segments, pred.panoptic = panoptic(raw, prompts, threshold)
    elif task == "semantic":
        pred.segments, pred.semantic = semantic(raw, prompts, threshold)
    elif task == "instance":
        pred.segments = instances(raw, prompts, threshold)
    elif task == "detection":
        pred.segments = instances(raw, prompts, threshold, with_masks=False)
    elif task == "referring":
        pred.segments = referring(raw, prompts)
    elif task == "foreground":
        pred.segments = foreground(raw, threshold)
    else:
        raise ValueError(f"unknown task {task!r}")
    return pred
