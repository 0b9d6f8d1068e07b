"""Per-browser-session state (held in gr.State): opened folder, current image, selection, undo/redo.

Edits go through `SessionState.edit()` so that every change is undoable and autosaved in one place.
The helpers raise ValueError with a sentence for the user; app.actions turns it into a reply.
"""
from __future__ import annotations

from contextlib import contextmanager
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from app.annotations import ImageAnnotations, Region, Snapshot
from app.workspace import Workspace

MAX_HISTORY = 30


@dataclass
class SessionState:
    """Everything one user has open. Deep-copied per session by gr.State, so sessions never share it."""

    folder: Optional[str] = None  # absolute path of the opened folder
    image_name: Optional[str] = None
    image: Optional[np.ndarray] = None  # (H, W, 3) uint8
    ann: Optional[ImageAnnotations] = None
    selected: Optional[int] = None  # region id
    box_corner: Optional[tuple[int, int]] = None  # first click of a two-click box
    undo_stack: list[Snapshot] = field(default_factory=list)
    redo_stack: list[Snapshot] = field(default_factory=list)
    review_queue: list[str] = field(default_factory=list)  # image names, most uncertain first
    saved_at: Optional[float] = None  # time.time() of the last autosave, for "saved 2 s ago"

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
        """Make `name` current; its saved annotation (if any) comes back, review resumes at its best proposal."""
        image = workspace.read_image(name)
        self.folder, self.image_name, self.image = str(workspace.folder), name, image
        self.ann = workspace.load(name, image.shape[:2])
        self.selected, self.box_corner = self.ann.next_proposal(), None
        self.undo_stack, self.redo_stack = [], []

    def close_image(self) -> None:
        self.image = self.ann = self.image_name = self.selected = self.box_corner = None
        self.undo_stack, self.redo_stack = [], []

    @contextmanager
    def edit(self) -> Iterator[ImageAnnotations]:
        """Snapshot for undo, let the caller change `ann`, then autosave. A changed image is no longer the
        exported version, so its `exported` mark is cleared."""
        _, ann = self.require_image()
        before = ann.snapshot()
        yield ann
        self.undo_stack = (self.undo_stack + [before])[-MAX_HISTORY:]
        self.redo_stack = []
        self._saved()

    def undo(self) -> bool:
        return self._swap(self.undo_stack, self.redo_stack)

    def redo(self) -> bool:
        return self._swap(self.redo_stack, self.undo_stack)

    def _swap(self, source: list[Snapshot], target: list[Snapshot]) -> bool:
        if not source or self.ann is None:
            return False
        target.append(self.ann.snapshot())
        self.ann.restore(source.pop())
        if self.ann.region(self.selected) is None:
            self.selected = None
        self._saved()
        return True

    def _saved(self) -> None:
        assert self.ann is not None
        self.ann.exported = False
        self.workspace.save(self.ann)
        self.saved_at = time.time()
