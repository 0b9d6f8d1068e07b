"""The editable annotation of one image (regions with masks) and its JSON form (masks as COCO RLE,
through qmn.data.mask_codec, the one RLE codec of the project).

This is what the app autosaves, undoes, exports and fine-tunes on; it is plain data so that
snapshots for undo are cheap deep copies and the JSON survives without the app.
"""
from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from qmn.data.image_io import encode_png
from qmn.data.mask_codec import decode_rle, encode_rle

IMAGE_STATES = ("new", "predicted", "corrected", "exported")


@dataclass
class Region:
    """One mask the user can accept, reject, relabel or paint."""

    id: int
    label: str
    mask: np.ndarray  # (H, W) bool
    score: float = 1.0
    query_type: str = "manual"  # learnable | conditional | prompted | manual (brush / GrabCut)
    accepted: bool = False
    visible: bool = True
    alpha: Optional[np.ndarray] = None  # (H, W) float32 in [0, 1] after matting refinement

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class ImageAnnotations:
    """All regions of one image plus how they were made (task, prompts) and the review state."""

    image: str  # path relative to the opened folder
    height: int
    width: int
    task: str = "instance"
    prompts: list[str] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    state: str = "new"

    def next_id(self) -> int:
        return max((r.id for r in self.regions), default=0) + 1

    def region(self, region_id: Optional[int]) -> Optional[Region]:
        return next((r for r in self.regions if r.id == region_id), None)

    def snapshot(self) -> list[Region]:
        """A deep copy of the regions, for undo/redo."""
        return copy.deepcopy(self.regions)


def _encode_alpha(alpha: np.ndarray) -> str:
    return base64.b64encode(encode_png(np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8))).decode("ascii")


def _decode_alpha(text: str) -> np.ndarray:
    png = np.frombuffer(base64.b64decode(text), np.uint8)
    return cv2.imdecode(png, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0


def to_json(ann: ImageAnnotations) -> dict:
    """JSON-safe dict; masks as RLE, alpha mattes as base64 PNG."""
    return {
        "image": ann.image,
        "height": ann.height,
        "width": ann.width,
        "task": ann.task,
        "prompts": list(ann.prompts),
        "state": ann.state,
        "regions": [
            {
                "id": r.id,
                "label": r.label,
                "score": float(r.score),
                "query_type": r.query_type,
                "accepted": r.accepted,
                "visible": r.visible,
                "rle": encode_rle(r.mask),
                **({"alpha_png": _encode_alpha(r.alpha)} if r.alpha is not None else {}),
            }
            for r in ann.regions
        ],
    }


def from_json(d: dict, source: str = "annotation") -> ImageAnnotations:
    """Parse `to_json` output; raises ValueError naming `source` and the bad field."""
    try:
        regions = [
            Region(
                id=int(r["id"]),
                label=str(r["label"]),
                mask=decode_rle(r["rle"], int(d["height"]), int(d["width"])),  # a mask of another size is refused
                score=float(r.get("score", 1.0)),
                query_type=str(r.get("query_type", "manual")),
                accepted=bool(r.get("accepted", False)),
                visible=bool(r.get("visible", True)),
                alpha=_decode_alpha(r["alpha_png"]) if "alpha_png" in r else None,
            )
            for r in d.get("regions", [])
        ]
        ann = ImageAnnotations(
            image=str(d["image"]),
            height=int(d["height"]),
            width=int(d["width"]),
            task=str(d.get("task", "instance")),
            prompts=[str(p) for p in d.get("prompts", [])],
            regions=regions,
            state=str(d.get("state", "predicted")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: bad annotation field ({type(e).__name__}: {e})") from None
    if ann.state not in IMAGE_STATES:
        raise ValueError(f"{source}: field 'state' must be one of {IMAGE_STATES}, got {ann.state!r}")
    return ann
