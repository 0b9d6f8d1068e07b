"""A standalone Blocks around the canvas, for the browser test and bench/canvas_latency.py.

It stands in for the annotate tab with cheap, deterministic "segmentation" (a point makes a disc,
a box fills the box) so the test checks the widget and its event path, not the model. Every
parsed gesture is appended to a visible JSON log (`#canvas-log`) that the test reads back.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import cv2
import gradio as gr
import numpy as np

from app import tools
from app.annotations import Region
from app.canvas import build_canvas, gesture_of, image_src, listen
from app.canvas_events import BoxEvent, CanvasEvent, KeyEvent, PointEvent, PolygonEvent, SelectEvent, StrokeEvent
from app.canvas_view import ClassTable, polygon_mask, render_props, stroke_mask

CLASSES = ClassTable(("cell", "nucleus", "debris"))
POINT_RADIUS = 15


@dataclass
class DemoState:
    image: np.ndarray
    regions: list[Region] = field(default_factory=list)
    selected: Optional[int] = None
    active_class: int = 0
    undo: list[list[Region]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)

    def next_id(self) -> int:
        return max((r.id for r in self.regions), default=0) + 1

    def region(self) -> Optional[Region]:
        return next((r for r in self.regions if r.id == self.selected), None)

    def add(self, mask: np.ndarray) -> None:
        self.regions.append(Region(self.next_id(), CLASSES.names[self.active_class], mask, review="edited"))
        self.selected = self.regions[-1].id


def sample_photo(height: int = 1024, width: int = 1280) -> np.ndarray:
    """A deterministic photo stand-in: a gradient with a grid of 30 px discs (small objects)."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.dstack([xx * 200 // width, yy * 200 // height, np.full_like(xx, 90)]).astype(np.uint8)
    for cy in range(64, height, 128):
        for cx in range(64, width, 128):
            cv2.circle(image, (cx, cy), 15, (240, 240, 240), -1)
    return image


def disc(shape: tuple[int, int], x: float, y: float, radius: float) -> np.ndarray:
    return stroke_mask(StrokeEvent(((x, y),), radius), shape)


def changes_masks(event: CanvasEvent) -> bool:
    """Whether an event edits masks (and so takes an undo snapshot); selection and navigation do not."""
    if isinstance(event, KeyEvent):
        return event.action in ("reject", "class")
    return not isinstance(event, SelectEvent)


def apply(state: DemoState, event: CanvasEvent) -> None:
    """What the annotate tab would do with each gesture, with a disc / box in place of the model."""
    shape = state.image.shape[:2]
    if changes_masks(event):
        state.undo.append(copy.deepcopy(state.regions))
    region = state.region()
    if isinstance(event, PointEvent) and event.positive:
        state.add(disc(shape, event.x, event.y, POINT_RADIUS))
    elif isinstance(event, PointEvent) and region is not None:
        region.mask = region.mask & ~disc(shape, event.x, event.y, POINT_RADIUS / 2)
    elif isinstance(event, BoxEvent):
        x0, y0, x1, y1 = (int(round(v)) for v in event.box)
        mask = np.zeros(shape, bool)
        mask[y0:y1, x0:x1] = True
        state.add(mask)
    elif isinstance(event, StrokeEvent):
        painted = stroke_mask(event, shape)
        if region is None and not event.erase:
            state.add(painted)
        elif region is not None:
            region.mask = tools.apply_brush(region.mask, painted, event.erase)
    elif isinstance(event, SelectEvent):
        state.selected = tools.region_at(state.regions, *event.pixel)
    elif isinstance(event, PolygonEvent) and region is not None and region.id == event.region_id:
        region.mask = polygon_mask(event, shape)
    elif isinstance(event, KeyEvent):
        apply_key(state, event)


def apply_key(state: DemoState, event: KeyEvent) -> None:
    region = state.region()
    if event.action == "class" and CLASSES.name_at(event.class_index) is not None:
        if region is not None:
            region.label = CLASSES.names[event.class_index]
        else:
            state.active_class = event.class_index
    elif event.action == "reject" and region is not None:
        state.regions = [r for r in state.regions if r.id != region.id]
        state.selected = None
    elif event.action == "undo" and state.undo:
        state.regions = state.undo.pop()
    elif event.action == "accept" and region is not None:
        region.review = "accepted"


def view(state: DemoState) -> dict[str, Any]:
    """The canvas props; `ack` = events handled so far (the test waits for it on screen)."""
    return render_props(image_src(state.image), state.image.shape[:2], state.regions, CLASSES, state.selected,
                        active_class=state.active_class, ack=len(state.log))


def event_record(event: CanvasEvent) -> dict[str, Any]:
    return {"type": type(event).__name__, **dataclasses.asdict(event)}


def on_gesture(state: DemoState, evt: gr.EventData) -> tuple:
    event = gesture_of(evt)
    if event is None:
        return state, gr.skip(), gr.skip()
    state.log.append(event_record(event))
    apply(state, event)
    return state, view(state), json.dumps(state.log)


def demo_blocks(image: Optional[np.ndarray] = None, height: int = 640) -> gr.Blocks:
    """The canvas on `image` (default `sample_photo()`), a per-session state and the event log."""
    image = sample_photo() if image is None else image
    with gr.Blocks(title="QueryMeld canvas") as demo:
        state = gr.State(DemoState(image))
        canvas = build_canvas(view(DemoState(image)), height=height)
        log = gr.Textbox(label="Events received by Python", elem_id="canvas-log", lines=4)
        listen(canvas, on_gesture, [state], [state, canvas, log])
    return demo


if __name__ == "__main__":
    demo_blocks().launch()
