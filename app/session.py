"""Per-browser-session state (held in gr.State): opened folder, current image, selection, undo/redo.

Edits go through `SessionState.edit()` so that every change is undoable and autosaved in one place.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from app.annotations import ImageAnnotations, Region
from app.workspace import Workspace
from qmn.model import parse_prompts as qmn_parse_prompts

MAX_HISTORY = 30


def parse_prompts(text: str | list[str] | None) -> list[str]:
    """'person, dog , ,sky' -> ['person', 'dog', 'sky']; one phrase per line is also accepted (qmn's own parser)."""
    if isinstance(text, str):
        text = text.replace("\n", ",")
    return qmn_parse_prompts(text, task="")


@dataclass
class SessionState:
    """Everything one user has open. Deep-copied per session by gr.State, so sessions never share it."""

    folder: Optional[str] = None  # absolute path of the opened folder
    image_name: Optional[str] = None
    image: Optional[np.ndarray] = None  # (H, W, 3) uint8
    ann: Optional[ImageAnnotations] = None
    selected: Optional[int] = None  # region id
    box_corner: Optional[tuple[int, int]] = None  # first click of a two-click box
    undo_stack: list[list[Region]] = field(default_factory=list)
    redo_stack: list[list[Region]] = field(default_factory=list)
    review_queue: list[str] = field(default_factory=list)  # image names, most uncertain first

    @property
    def workspace(self) -> Workspace:
        if self.folder is None:
            raise ValueError("no folder is open: open a folder or upload images first")
        return Workspace(self.folder)

    def require_image(self) -> tuple[np.ndarray, ImageAnnotations]:
        if self.image is None or self.ann is None:
            raise ValueError("no image is open: pick one from the list, the examples, or upload one")
        return self.image, self.ann

    def selected_region(self) -> Region:
        _, ann = self.require_image()
        region = ann.region(self.selected)
        if region is None:
            raise ValueError("no mask is selected: click on a mask or on a row of the table")
        return region

    def open_image(self, workspace: Workspace, name: str) -> None:
        """Make `name` current; its saved annotation (if any) comes back, history starts empty."""
        image = workspace.read_image(name)
        self.folder, self.image_name, self.image = str(workspace.folder), name, image
        self.ann = workspace.load(name, image.shape[:2])
        self.selected, self.box_corner = None, None
        self.undo_stack, self.redo_stack = [], []

    @contextmanager
    def edit(self, state: str = "corrected") -> Iterator[ImageAnnotations]:
        """Snapshot for undo, let the caller change `ann`, then mark `state` and autosave."""
        _, ann = self.require_image()
        before = ann.snapshot()
        yield ann
        self.undo_stack = (self.undo_stack + [before])[-MAX_HISTORY:]
        self.redo_stack = []
        ann.state = state
        self.workspace.save(ann)

    def undo(self) -> bool:
        return self._swap(self.undo_stack, self.redo_stack)

    def redo(self) -> bool:
        return self._swap(self.redo_stack, self.undo_stack)

    def _swap(self, source: list, target: list) -> bool:
        if not source or self.ann is None:
            return False
        target.append(self.ann.snapshot())
        self.ann.regions = source.pop()
        self.ann.state = "corrected"
        if self.ann.region(self.selected) is None:
            self.selected = None
        self.workspace.save(self.ann)
        return True
