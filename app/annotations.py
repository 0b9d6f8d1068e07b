"""The editable annotation of one image (regions with masks), its review state, and its JSON form (masks as
COCO RLE, through qmn.data.mask_codec, the one RLE codec of the project).

Review state is what makes labels trustworthy: export and fine-tuning use only what a person vouched for.
- A region is `proposed` (made by the model, unreviewed), `accepted` (a person kept the model's mask as is),
  `edited` (a person drew or changed it) or `rejected` (a person said no; kept so the decision is visible and
  undoable, never exported or trained on).
- An image is `new` (nothing proposed), `proposed` (only model proposals), `in review` (a person decided on at
  least one region) or `done` (a person said the image is finished). The state is derived, never stored apart
  from the regions, so it cannot contradict them.

Files written before review states existed (a bool `accepted` per region and a stored image state among
new / predicted / corrected / exported) are read and migrated: see `_legacy_review` and `LEGACY_FORMAT`.
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

FORMAT = 2  # written as "format"; files without it are LEGACY_FORMAT (accepted bool, stored image state)
LEGACY_FORMAT = 1
REVIEW_STATES = ("proposed", "accepted", "edited", "rejected")
VOUCHED = ("accepted", "edited")  # what a person checked: exported and trained on by default
IMAGE_STATES = ("new", "proposed", "in review", "done")
LEGACY_IMAGE_STATES = ("new", "predicted", "corrected", "exported")


@dataclass
class Region:
    """One mask the user can accept, reject, relabel or paint."""

    id: int
    label: str
    mask: np.ndarray  # (H, W) bool
    score: float = 1.0
    query_type: str = "manual"  # learnable | conditional | prompted | manual (brush / GrabCut)
    review: str = "proposed"  # one of REVIEW_STATES
    visible: bool = True
    alpha: Optional[np.ndarray] = None  # (H, W) float32 in [0, 1] after matting refinement

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def vouched(self) -> bool:
        return self.review in VOUCHED

    @property
    def shown(self) -> bool:
        """Drawn on the overlay and clickable: visible and not rejected."""
        return self.visible and self.review != "rejected"


@dataclass
class Snapshot:
    """What undo restores: the regions and whether the image was marked done."""

    regions: list[Region]
    done: bool


@dataclass
class ImageAnnotations:
    """All regions of one image plus how they were made (task, prompts) and its review flags."""

    image: str  # path relative to the opened folder
    height: int
    width: int
    task: str = "instance"
    prompts: list[str] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    done: bool = False  # a person marked the image finished
    exported: bool = False  # written by an export and unchanged since
    segmented: bool = False  # the model ran on it at least once (so "no masks" means "found nothing")

    @property
    def state(self) -> str:
        if self.done:
            return "done"
        if any(r.review != "proposed" for r in self.regions):
            return "in review"
        return "proposed" if self.regions else "new"

    def count(self, review: str) -> int:
        return sum(r.review == review for r in self.regions)

    def next_id(self) -> int:
        return max((r.id for r in self.regions), default=0) + 1

    def region(self, region_id: Optional[int]) -> Optional[Region]:
        return next((r for r in self.regions if r.id == region_id), None)

    def next_proposal(self) -> Optional[int]:
        """Id of the best-scoring proposal still waiting for a decision: where review continues."""
        pending = [r for r in self.regions if r.review == "proposed" and r.shown]
        return max(pending, key=lambda r: r.score).id if pending else None

    def snapshot(self) -> Snapshot:
        """A deep copy for undo/redo."""
        return Snapshot(copy.deepcopy(self.regions), self.done)

    def restore(self, snap: Snapshot) -> None:
        self.regions, self.done = snap.regions, snap.done


def _encode_alpha(alpha: np.ndarray) -> str:
    return base64.b64encode(encode_png(np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8))).decode("ascii")


def _decode_alpha(text: str) -> np.ndarray:
    png = np.frombuffer(base64.b64decode(text), np.uint8)
    return cv2.imdecode(png, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0


def to_json(ann: ImageAnnotations) -> dict:
    """JSON-safe dict; masks as RLE, alpha mattes as base64 PNG. `state` is written for readers of the file
    (and the fast image list); it is recomputed from the regions on load."""
    return {
        "format": FORMAT,
        "image": ann.image,
        "height": ann.height,
        "width": ann.width,
        "task": ann.task,
        "prompts": list(ann.prompts),
        "state": ann.state,
        "done": ann.done,
        "exported": ann.exported,
        "segmented": ann.segmented,
        "regions": [
            {
                "id": r.id,
                "label": r.label,
                "score": float(r.score),
                "query_type": r.query_type,
                "review": r.review,
                "visible": r.visible,
                "rle": encode_rle(r.mask),
                **({"alpha_png": _encode_alpha(r.alpha)} if r.alpha is not None else {}),
            }
            for r in ann.regions
        ],
    }


def _legacy_review(r: dict) -> str:
    """Format 1 had `accepted: bool`; an accepted hand-made region (brush / GrabCut) was drawn by a person."""
    if not r.get("accepted", False):
        return "proposed"
    return "edited" if r.get("query_type", "manual") == "manual" else "accepted"


def _review(r: dict, legacy: bool) -> str:
    review = _legacy_review(r) if legacy else str(r.get("review", "proposed"))
    if review not in REVIEW_STATES:
        raise ValueError(f"field 'review' must be one of {REVIEW_STATES}, got {review!r}")
    return review


def from_json(d: dict, source: str = "annotation") -> ImageAnnotations:
    """Parse `to_json` output (or a format-1 file, migrated); raises ValueError naming `source` and the bad field."""
    legacy = d.get("format", LEGACY_FORMAT) == LEGACY_FORMAT if isinstance(d, dict) else False
    try:
        old_state = str(d.get("state", "predicted")) if legacy else None
        if legacy and old_state not in LEGACY_IMAGE_STATES:
            raise ValueError(f"field 'state' must be one of {LEGACY_IMAGE_STATES}, got {old_state!r}")
        regions = [
            Region(
                id=int(r["id"]),
                label=str(r["label"]),
                mask=decode_rle(r["rle"], int(d["height"]), int(d["width"])),  # a mask of another size is refused
                score=float(r.get("score", 1.0)),
                query_type=str(r.get("query_type", "manual")),
                review=_review(r, legacy),
                visible=bool(r.get("visible", True)),
                alpha=_decode_alpha(r["alpha_png"]) if "alpha_png" in r else None,
            )
            for r in d.get("regions", [])
        ]
        return ImageAnnotations(
            image=str(d["image"]),
            height=int(d["height"]),
            width=int(d["width"]),
            task=str(d.get("task", "instance")),
            prompts=[str(p) for p in d.get("prompts", [])],
            regions=regions,
            done=bool(d.get("done", False)),  # format 1 had no "done": a person must say so now
            exported=bool(d.get("exported", old_state == "exported")),
            segmented=bool(d.get("segmented", legacy and old_state != "new")),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: bad annotation field ({type(e).__name__}: {e})") from None


def state_from_json(d: dict, source: str = "annotation") -> str:
    """The image state of a saved file without decoding its masks when the file says it (format 2)."""
    if isinstance(d, dict) and d.get("format") == FORMAT and d.get("state") in IMAGE_STATES:
        return str(d["state"])
    return from_json(d, source).state
