"""Predictor (SAM's `SamPredictor` shape): one RGB image + prompts in, a `Prediction` out.

It owns everything between a user and `QueryMeldNet.forward`: input validation, the prompt rule
(`qmn.prompts.parse_prompts`), resize / pad / normalise, the geometry that turns pixel boxes and clicks into prompted
queries (`user_prompts`), and the dispatch to the task's post-processing in `qmn.inference`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from qmn.batching import FOREGROUND_PROMPT, prepare_image, to_rgb_uint8
from qmn.box_ops import box_xyxy_to_cxcywh
from qmn.data.sample import TASKS
from qmn.inference import RawOutput, postprocess, prompted
from qmn.model import QueryMeldNet
from qmn.prompt_crop import predict_boxes_on_crops
from qmn.prompts import parse_prompts
from qmn.queries import Prompts
from qmn.structures import Prediction
from qmn.tiling import TILED_TASKS, tiled_predict

CLICK_BOX_HALF = 0.05  # half-side of the small box a click-only prompt gets, in units of the model's square


def user_prompts(boxes: Sequence | None, points: Sequence | None, scale: float, size: int) -> Prompts | None:
    """xyxy pixel boxes and (x, y, positive) clicks -> one prompted query per box (batch of 1), or None.

    Clicks inside a box refine that box's query; the clicks outside every box together make one more query (an object
    picked by clicks), whose small box sits on its first positive click. `scale` = model pixels per image pixel,
    `size` = the model's square side: coordinates become [0, 1] of that square.
    """
    boxes = [np.asarray(b, np.float32).reshape(4) for b in (boxes or [])]
    points = [(float(x), float(y), bool(p)) for x, y, p in (points or [])]
    for b in boxes:
        if not np.isfinite(b).all() or b[2] <= b[0] or b[3] <= b[1]:
            raise ValueError(f"invalid box {b.tolist()}: expected [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
    queries: list[tuple[np.ndarray, bool, list]] = [(b * scale / size, True, []) for b in boxes]  # (xyxy, from_box, clicks)
    loose = []
    for x, y, positive in points:
        xy = np.array([x, y], np.float32) * scale / size
        inside = [q for q in queries if q[0][0] <= xy[0] <= q[0][2] and q[0][1] <= xy[1] <= q[0][3]]
        for q in inside:
            q[2].append((xy, positive))
        if not inside:
            loose.append((xy, positive))
    anchor = next((xy for xy, positive in loose if positive), None)
    if anchor is not None:
        queries.append((np.concatenate([anchor - CLICK_BOX_HALF, anchor + CLICK_BOX_HALF]), False, loose))
    if not queries:
        return None
    m = max(1, max(len(q[2]) for q in queries))
    p = len(queries)
    pts = torch.zeros(1, p, m, 2)  # clicks padded to M per query
    labels = torch.full((1, p, m), -1, dtype=torch.long)
    for i, (_, _, clicks) in enumerate(queries):
        for j, (xy, positive) in enumerate(clicks):
            pts[0, i, j] = torch.from_numpy(np.clip(xy, 0, 1))
            labels[0, i, j] = int(positive)
    xyxy = torch.from_numpy(np.clip(np.stack([q[0] for q in queries]), 0, 1))  # (P, 4)
    return Prompts(box_xyxy_to_cxcywh(xyxy)[None].clamp(1e-3, 1), torch.ones(1, p, dtype=torch.bool),
                   torch.tensor([[q[1] for q in queries]]), pts, labels)


class Predictor:
    """Wraps a `QueryMeldNet`; holds no state of its own but the model, so it is cheap to make per call."""

    def __init__(self, model: QueryMeldNet) -> None:
        self.model = model

    @torch.no_grad()
    def predict(self, image: np.ndarray, prompts: str | Sequence[str] | None = None, task: str = "panoptic",
                threshold: float | None = None, boxes: Sequence | None = None,
                points: Sequence | None = None, look_closely: bool = True) -> Prediction:
        """Segment one RGB image (any size; gray / RGBA accepted). Box / click prompts, when given, each return one
        segment (query_type "prompted"; a box's mask is kept within the box plus a 10% margin) and the task's own
        post-processing is skipped. `threshold=None` uses the model's calibrated `cfg.score_threshold`. With
        `look_closely`, each box is segmented on a crop around it (`qmn.prompt_crop`; held-out box IoU +0.06 / +0.08
        on coco128 / fruitsnuts in `bench/interactive.py`)."""
        model, cfg = self.model, self.model.cfg
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        threshold = cfg.score_threshold if threshold is None else threshold
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        texts = [FOREGROUND_PROMPT] if task == "foreground" else parse_prompts(prompts, task)
        if not texts and not (boxes or points):
            raise ValueError(f"no prompt: type class names (e.g. 'person, dog, sky') for {task}, or a phrase for referring")
        image = to_rgb_uint8(image)
        if look_closely and boxes:
            user_prompts(boxes, points, 1.0, 1)  # validates the prompts before any crop is made
            again = lambda img, boxes=None, points=None: self.predict(img, prompts, task, threshold, boxes, points,  # noqa: E731
                                                                      look_closely=False)
            pred = Prediction(task=task, prompts=texts, image_size=image.shape[:2])
            pred.segments = predict_boxes_on_crops(again, image, boxes, [tuple(p) for p in points or []])
            return pred
        if (cfg.native_max_side and not (boxes or points) and task in TILED_TASKS
                and max(image.shape[:2]) > cfg.image_size):  # at the photo's own scale, window by window
            return tiled_predict(image, lambda window: self.predict(window, texts, task, threshold), task, texts,
                                 cfg.image_size, cfg.image_size // 4, cfg.native_max_side)
        prep = prepare_image(image, cfg.image_size, cfg.pixel_mean, cfg.pixel_std)
        user = user_prompts(boxes, points, prep.scale, cfg.image_size)
        model_texts = texts or [FOREGROUND_PROMPT]
        was_training = model.training
        model.eval()
        try:
            out = model(prep.tensor[None].to(model.device), model_texts,
                        None if user is None else user.to(model.device))
        finally:
            model.train(was_training)
        last = out.layers[-1]
        raw = RawOutput(last.logits[0].float().sigmoid(), last.masks[0].float(), last.boxes[0].float(),
                        out.query_types(), cfg.image_size, prep.valid_hw, prep.original_hw)
        if user is None:
            return postprocess(raw, task, model_texts, float(threshold))
        clip = [np.asarray(b, np.float32) for b in boxes or []]  # box prompts come first, then the click query
        clip += [None] * (out.num_prompted - len(clip))
        pred = Prediction(task=task, prompts=texts, image_size=prep.original_hw)
        pred.segments = prompted(raw, model_texts, out.prompted.start, labelled=bool(texts), clip_boxes=clip)
        return pred
