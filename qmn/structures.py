"""What `Predictor.predict` returns: plain numpy, no torch, so the app and writers stay simple."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Segment:
    """One predicted region at full image size."""

    label: str  # the prompt it answers (class name or referring phrase); "foreground" for that task
    score: float  # in [0, 1]
    mask: Optional[np.ndarray]  # (H, W) bool; None for the detection task
    box: np.ndarray  # (4,) float32 xyxy pixels
    query_type: str  # "learnable" | "conditional" | "prompted" (box / click prompts)
    query_index: int = -1  # index of the decoder query that produced it
    id: int = 0  # 1-based segment id; equals the value in `Prediction.panoptic` for that task


@dataclass
class Prediction:
    """Result of one image: segments plus the dense maps of the semantic and panoptic tasks."""

    task: str
    prompts: list[str]
    segments: list[Segment] = field(default_factory=list)
    semantic: Optional[np.ndarray] = None  # (H, W) int32 index into `prompts`; -1 = no class scores >= threshold
    panoptic: Optional[np.ndarray] = None  # (H, W) int32 segment id, 0 = void
    image_size: tuple[int, int] = (0, 0)  # (H, W)
