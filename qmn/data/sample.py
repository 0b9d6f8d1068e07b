"""The unified training/evaluation sample of paper §3.3: an image and (text, box, mask) triplets.

Every dataset of every task is read into this one format. There is deliberately no stuff/thing
flag: a class name and a referring phrase are both just `text`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

TASKS = ("panoptic", "instance", "semantic", "referring", "foreground", "detection")


@dataclass
class Annotation:
    """One region: `text` (class name or phrase), `box` xyxy pixels (float), optional bool mask (H, W)."""

    text: str
    box: np.ndarray  # (4,) float32 xyxy, pixels
    mask: Optional[np.ndarray] = None  # (H, W) bool, or None for box-only (detection) data
    iscrowd: bool = False
    extra: dict = field(default_factory=dict)  # e.g. {"phrases": [...], "category_id": 3, "alpha": (H,W) float32}

    @staticmethod
    def from_mask(text: str, mask: np.ndarray, **kw) -> "Annotation":
        return Annotation(text=text, box=mask_to_box(mask), mask=mask.astype(bool), **kw)


@dataclass
class Sample:
    """An RGB uint8 image (H, W, 3) with its annotations and the task it was labeled for."""

    image: np.ndarray
    annotations: list[Annotation]
    task: str = "panoptic"
    image_id: str = ""  # file name relative to the dataset's image folder
    vocabulary: list[str] = field(default_factory=list)  # all class names of its dataset (negatives)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight xyxy box (x2/y2 exclusive, i.e. x2 = last column + 1) of a boolean mask; zeros if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros(4, np.float32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
