"""What each canvas gesture does to the session, through the existing actions (app/actions): a click
prompts the model with points, a drag fills a box, a stroke paints, a key reviews. No Gradio here.

Clicks build one object: the first positive click makes a mask from the model's point query, the
next clicks (shift = negative) re-run the query with all clicks so far and replace that mask, as
long as it stays selected; selecting another mask, reviewing or changing image starts a new object.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from app.actions import draw, navigate, review
from app.actions.reply import Reply, refusals_as_replies, refused
from app.actions.segment import predict_regions
from app.annotations import Region
from app.canvas_events import (BoxEvent, CanvasEvent, KeyEvent, PointEvent, PolygonEvent, SelectEvent, StrokeEvent)
from app.canvas_view import ClassTable, polygon_mask, render_props, stroke_mask
from app.model_host import ModelHost
from app.session import SessionState
from qmn.grabcut import grabcut_click_update
from qmn.prompts import parse_prompts


PROPOSALS_SHOWN = 8  # unreviewed proposals drawn at once; m shows the rest


@dataclass
class CanvasState:
    """Per-session canvas state that is not annotation (so not undone): the clicks of the object
    being made and which mask they built, and the class of the next mask (number keys)."""

    clicks: list[tuple[float, float, bool]] = field(default_factory=list)
    click_region: Optional[int] = None
    image_name: Optional[str] = None
    active_class: Optional[int] = None  # None: new masks take the typed label, else the first prompt
    answered: int = 0  # gestures handled, sent as the props' `ack`
    in_flight: int = 0  # gestures being handled right now
    all_proposals: bool = False  # m: show every unreviewed proposal, not only the PROPOSALS_SHOWN best
    last_view: Optional[dict[str, Any]] = None  # the props last sent to the page (a refresh that equals it is skipped)

    def current_clicks(self, session: SessionState) -> list[tuple[float, float, bool]]:
        """The clicks still building the selected mask; forgotten once it is not the object at hand."""
        if self.image_name != session.image_name or session.selected != self.click_region:
            self.clicks, self.click_region, self.image_name = [], None, session.image_name
        return self.clicks


@dataclass(frozen=True)
class Inputs:
    """The tab's other inputs a gesture needs: prompts (the classes), task, the typed label, and
    how a box or clicks are filled ("grabcut", the measured best, or "model")."""

    prompts: str = ""
    task: str = "instance"
    label: str = ""
    box_method: str = "grabcut"


def class_table(session: SessionState, inputs: Inputs) -> ClassTable:
    """The prompts as classes (the folder's ontology when it was loaded), then labels in use on the
    image; a referring phrase is not a class."""
    names = [] if inputs.task == "referring" else parse_prompts(inputs.prompts, inputs.task)
    table = ClassTable(tuple(dict.fromkeys(names)))
    for region in session.ann.regions if session.ann else []:
        table = table.with_name(region.label)
    return table


def new_label(session: SessionState, canvas: CanvasState, inputs: Inputs) -> str:
    """The class of a mask made on the canvas: the one picked with a number key, else as typed."""
    picked = class_table(session, inputs).name_at(canvas.active_class)
    return picked or draw.new_label(inputs.label, inputs.prompts, inputs.task)


def clicks_mask(host: ModelHost, image, label: str, clicks: list, previous, method: str) -> Optional[np.ndarray]:
    """The object the clicks describe: the previous mask corrected by GrabCut where the newest click is (what
    bench/interactive.py measures best on real photos; the model's click query never reaches NoC@85 there), or the
    model's point query."""
    if method != "model":
        mask = grabcut_click_update(image, clicks, previous=previous)
        return mask if mask.any() else None
    found = [r for r in predict_regions(host, image, [label], "instance", 0.0, [], clicks, 1)
             if r.query_type == "prompted" and r.mask.any()]
    return max(found, key=lambda r: r.score).mask if found else None


@refusals_as_replies
def click(session: SessionState, host: ModelHost, canvas: CanvasState, event: PointEvent, label: str,
          method: str = "grabcut") -> Reply:
    """Add a click to the current object and re-segment it (clicks plus the previous mask)."""
    img, ann = session.require_image()
    clicks = canvas.current_clicks(session) + [(event.x, event.y, event.positive)]
    if not any(positive for _, _, positive in clicks):
        return refused("start an object with a plain click; shift-click then marks what is not part of it")
    current = ann.region(canvas.click_region)
    started = time.perf_counter()
    mask = clicks_mask(host, img, label, clicks, None if current is None else current.mask, method)
    seconds = time.perf_counter() - started
    if mask is None:
        return refused("no mask for these clicks: try a box (drag) or the brush")
    with session.edit() as a:
        target = a.region(canvas.click_region)
        if target is None:
            target = Region(id=a.next_id(), label=label, mask=mask, query_type="manual", review="edited")
            a.regions.append(target)
        else:
            target.mask, target.alpha, target.review = mask, None, "edited"
    canvas.clicks, canvas.click_region, canvas.image_name = clicks, target.id, session.image_name
    session.selected = target.id
    return Reply(f"#{target.id} {target.label} from {len(clicks)} click{'s' if len(clicks) > 1 else ''} in "
                 f"{seconds:.2f} s (click again to refine, shift-click to cut away).")


@refusals_as_replies
def outline(session: SessionState, event: PolygonEvent) -> Reply:
    """Replace a mask by its edited outline (rasterised as the COCO polygon export is read back)."""
    img, ann = session.require_image()
    if ann.region(event.region_id) is None:
        return refused(f"no mask with id {event.region_id} on this image")
    mask = polygon_mask(event, img.shape[:2])
    if not mask.any():
        return refused("the edited outline covers no pixel: undo, or move the vertices apart")
    with session.edit() as a:
        target = a.region(event.region_id)
        target.mask, target.alpha, target.review = mask, None, "edited"
    session.selected = event.region_id
    return Reply(f"#{event.region_id} reshaped from its outline.")


def pick_class(session: SessionState, canvas: CanvasState, event: KeyEvent, inputs: Inputs) -> Reply:
    """Number key: relabel the selected mask, or (nothing selected) set the class of the next masks."""
    name = class_table(session, inputs).name_at(event.class_index)
    if name is None:
        return refused(f"no class {event.key}: type the classes as prompts (or save them as the folder's ontology)")
    if session.ann is not None and session.ann.region(session.selected) is not None:
        return review.relabel(session, name)
    canvas.active_class = int(event.class_index)
    return Reply(f"New masks will be {name!r}.")


KEY_HANDLERS: dict[str, Callable[[SessionState], Reply]] = {
    "accept": review.accept, "reject": review.reject, "undo": review.undo, "redo": review.redo,
    "done": review.mark_done,
    "next": lambda s: navigate.step_image(s, 1), "previous": lambda s: navigate.step_image(s, -1),
    "next_to_review": navigate.next_to_review,
}


def handle(session: SessionState, host: ModelHost, canvas: CanvasState, event: CanvasEvent, inputs: Inputs) -> Reply:
    """Do what `event` asks, through the same actions as the buttons and the API. The answer count (the view's
    `ack`, from which the page times a gesture) moves only once the gesture is done: a view rendered meanwhile by
    another event (a refresh) must not pass for this gesture's answer."""
    canvas.in_flight += 1
    try:
        return _dispatch(session, host, canvas, event, inputs)
    finally:
        canvas.in_flight -= 1
        canvas.answered += 1


def _dispatch(session: SessionState, host: ModelHost, canvas: CanvasState, event: CanvasEvent,
              inputs: Inputs) -> Reply:
    if isinstance(event, PointEvent):
        return click(session, host, canvas, event, new_label(session, canvas, inputs), inputs.box_method)
    if isinstance(event, BoxEvent):
        return draw.add_box(session, host, json.dumps(list(event.box)), new_label(session, canvas, inputs),
                            inputs.box_method, inputs.prompts, inputs.task)
    if isinstance(event, StrokeEvent):
        if session.image is None:
            return refused("no image is open: pick one from the list, the examples, or upload one")
        painted = stroke_mask(event, session.image.shape[:2])
        return draw.paint(session, painted, event.erase, new_label(session, canvas, inputs), inputs.prompts,
                          inputs.task)
    if isinstance(event, SelectEvent):
        return review.select_at(session, *event.pixel)
    if isinstance(event, PolygonEvent):
        return outline(session, event)
    if event.action == "class":
        return pick_class(session, canvas, event, inputs)
    if event.action == "more":
        canvas.all_proposals = not canvas.all_proposals
        return Reply("Showing every proposal." if canvas.all_proposals
                     else f"Showing the {PROPOSALS_SHOWN} best proposals (m: all).")
    return KEY_HANDLERS[event.action](session)


def shown_regions(session: SessionState, canvas: CanvasState) -> tuple[list, int]:
    """(regions to draw, proposals held back): reviewed masks and the selected one always; unreviewed proposals only
    the PROPOSALS_SHOWN best-scoring unless the user asked for all (so a low threshold does not flood the view)."""
    regions = [r for r in session.ann.regions if r.shown]
    proposals = sorted((r for r in regions if r.review == "proposed" and r.id != session.selected),
                       key=lambda r: -r.score)
    held = set() if canvas.all_proposals else {r.id for r in proposals[PROPOSALS_SHOWN:]}
    return [r for r in regions if r.id not in held], len(held)


def canvas_props(session: SessionState, canvas: CanvasState, inputs: Inputs, image_src: Callable[[Any], str],
                 opacity: float = 0.45) -> dict[str, Any]:
    """The widget's value for the session's current image (`image_src` serves the photo)."""
    if session.image is None or session.ann is None:
        return render_props(None, None, [], class_table(session, inputs), ack=canvas.answered)
    shown, held = shown_regions(session, canvas)
    points = canvas.current_clicks(session)
    props = render_props(image_src(session.image), session.image.shape[:2], shown, class_table(session, inputs),
                         session.selected, opacity, -1 if canvas.active_class is None else canvas.active_class, points,
                         canvas.answered)
    props["more"] = {"held": held, "all": canvas.all_proposals}
    return props
