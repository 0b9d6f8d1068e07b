"""Canvas gestures through the app's actions, without a browser: clicks build and refine one object
with the model's point query, keys pick classes and review, strokes paint, an edited outline
reshapes a mask. A stand-in host answers point prompts with a disc (no model weights needed)."""
from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from app.canvas_actions import CanvasState, Inputs, canvas_props, class_table, handle
from app.canvas_events import BoxEvent, PointEvent, PolygonEvent, SelectEvent, StrokeEvent, key_event
from app.canvas_view import stroke_mask
from app.session import SessionState
from app.tabs.canvas_panel import settled_panels
from app.workspace import Workspace
from qmn.data.mask_codec import mask_to_polygons

SHAPE = (96, 128)
INPUTS = Inputs(prompts="cell, nucleus", task="instance", box_method="model")  # clicks go to the (stand-in) model
GRABCUT = dataclasses.replace(INPUTS, box_method="grabcut")


class DiscHost:
    """Answers clicks with a disc of radius 10 at the first positive click, minus radius-4 discs at
    negative ones; records the clicks it was given."""

    def __init__(self):
        self.calls: list[list] = []

    def predict(self, image, prompts, task, threshold, boxes=None, points=None):
        self.calls.append(list(points or []))
        mask = np.zeros(image.shape[:2], bool)
        positives = [(x, y) for x, y, p in points or [] if p]
        if positives:
            mask |= stroke_mask(StrokeEvent((positives[0],), 10.0), image.shape[:2])
        for x, y, p in points or []:
            if not p:
                mask &= ~stroke_mask(StrokeEvent(((x, y),), 4.0), image.shape[:2])
        return SimpleNamespace(segments=[SimpleNamespace(label=prompts[0], score=0.8, mask=mask, box=None,
                                                         query_type="prompted")])


@pytest.fixture
def session(tmp_path) -> SessionState:
    ws = Workspace(tmp_path)
    rng = np.random.default_rng(0)
    name = ws.add_image_array("photo", rng.integers(0, 255, (*SHAPE, 3), dtype=np.uint8))
    s = SessionState()
    s.open_image(ws, name)
    return s


def test_clicks_build_then_refine_one_object(session):
    host, canvas = DiscHost(), CanvasState()
    assert handle(session, host, canvas, PointEvent(40.5, 40.5), INPUTS).ok
    first = session.ann.region(session.selected)
    assert first.label == "cell" and first.review == "edited" and first.mask[40, 40]
    reply = handle(session, host, canvas, PointEvent(44.5, 40.5, positive=False), INPUTS)
    assert reply.ok and host.calls[-1] == [(40.5, 40.5, True), (44.5, 40.5, False)]
    assert len(session.ann.regions) == 1 and not session.ann.regions[0].mask[40, 44]  # refined in place
    assert canvas_props(session, canvas, INPUTS, lambda image: "u")["points"] == [[40.5, 40.5, True], [44.5, 40.5, False]]
    handle(session, host, canvas, SelectEvent(1.5, 1.5), INPUTS)  # clicking empty space ends the object
    assert session.selected is None
    handle(session, host, canvas, PointEvent(90.5, 60.5), INPUTS)
    assert len(session.ann.regions) == 2 and host.calls[-1] == [(90.5, 60.5, True)]


def test_a_negative_first_click_is_refused(session):
    reply = handle(session, DiscHost(), CanvasState(), PointEvent(10, 10, positive=False), INPUTS)
    assert not reply.ok and "plain click" in reply.message and not session.ann.regions


def test_number_keys_pick_the_class_then_relabel(session):
    host, canvas = DiscHost(), CanvasState()
    assert handle(session, host, canvas, key_event("2"), INPUTS).ok and canvas.active_class == 1
    handle(session, host, canvas, PointEvent(40.5, 40.5), INPUTS)
    region = session.ann.region(session.selected)
    assert region.label == "nucleus"
    handle(session, host, canvas, key_event("1"), INPUTS)
    assert region.id == session.selected and session.ann.region(region.id).label == "cell"
    refused = handle(session, host, canvas, key_event("7"), INPUTS)
    assert not refused.ok and "no class 7" in refused.message
    assert class_table(session, INPUTS).names == ("cell", "nucleus")


def test_review_keys_and_undo(session):
    host, canvas = DiscHost(), CanvasState()
    handle(session, host, canvas, PointEvent(40.5, 40.5), INPUTS)
    rid = session.selected
    assert handle(session, host, canvas, key_event("r"), INPUTS).ok
    assert session.ann.region(rid).review == "rejected"
    assert handle(session, host, canvas, key_event("u"), INPUTS).ok
    assert session.ann.region(rid).review == "edited"


def test_grabcut_clicks_need_no_model_and_follow_negative_clicks(tmp_path):
    """The default fill: GrabCut seeded by the clicks and the previous mask; the model is never asked."""
    ws = Workspace(tmp_path)
    image = np.full((*SHAPE, 3), 40, np.uint8)
    image[30:60, 30:70] = (220, 200, 60)  # a bright object on a dark ground
    s = SessionState()
    s.open_image(ws, ws.add_image_array("photo", image))
    host, canvas, inputs = DiscHost(), CanvasState(), GRABCUT
    assert handle(s, host, canvas, PointEvent(50.5, 45.5), inputs).ok
    mask = s.ann.region(s.selected).mask
    assert mask[45, 50] and not mask[80, 100] and not host.calls
    assert handle(s, host, canvas, PointEvent(65.5, 45.5, positive=False), inputs).ok
    assert len(s.ann.regions) == 1 and not s.ann.region(s.selected).mask[45, 65] and not host.calls


def test_stroke_box_and_outline(session):
    host, canvas = DiscHost(), CanvasState()
    assert handle(session, host, canvas, StrokeEvent(((20.5, 20.5), (30.5, 20.5)), 3.0), GRABCUT).ok
    painted = session.ann.region(session.selected)
    assert painted.mask[20, 25] and painted.label == "cell"
    handle(session, host, canvas, StrokeEvent(((25.5, 20.5),), 2.0, erase=True), GRABCUT)
    assert not session.ann.region(painted.id).mask[20, 25]
    assert handle(session, host, canvas, BoxEvent((60.0, 30.0, 100.0, 70.0)), GRABCUT).ok
    boxed = session.ann.region(session.selected)
    assert boxed.id != painted.id and boxed.mask[30:70, 60:100].any() and not boxed.mask[:, :50].any()
    ring = list(mask_to_polygons(np.pad(np.ones((10, 10), bool), ((40, 46), (5, 113))))[0])
    assert handle(session, host, canvas, PolygonEvent(boxed.id, (tuple(ring),)), GRABCUT).ok
    assert session.ann.region(boxed.id).area == 100
    assert not handle(session, host, canvas, PolygonEvent(999, (tuple(ring),)), GRABCUT).ok


def test_j_walks_to_the_next_image_to_review(session):
    """j = next image not done yet; with one image open and nothing else waiting, it says so."""
    reply = handle(session, DiscHost(), CanvasState(), key_event("j"), INPUTS)
    assert not reply.ok and "no other image is waiting" in reply.message
    name = session.workspace.add_image_array("second", np.zeros((*SHAPE, 3), np.uint8))
    assert handle(session, DiscHost(), CanvasState(), key_event("j"), INPUTS).ok and session.image_name == name


def test_low_score_proposals_wait_behind_show_more(session):
    """12 unreviewed proposals: the 8 best are drawn, 4 wait behind "show 4 more"; m shows them all and back; the
    selected proposal and reviewed masks are always drawn."""
    from app.annotations import Region
    from app.canvas_actions import PROPOSALS_SHOWN, shown_regions

    with session.edit() as a:
        a.regions = [Region(i + 1, "cell", stroke_mask(StrokeEvent(((5.5 + 9 * i, 20.5),), 3.0), SHAPE), 0.1 + 0.05 * i,
                            "conditional") for i in range(12)]
        a.regions[0].review = "accepted"  # the lowest score, but a person kept it
    session.selected = 2  # the second lowest, selected
    canvas = CanvasState()
    drawn, held = shown_regions(session, canvas)
    assert held == 12 - 2 - PROPOSALS_SHOWN == 2 and {1, 2} <= {r.id for r in drawn}
    assert {r.id for r in drawn} == {1, 2} | set(range(5, 13))  # the 8 best of the other proposals
    props = canvas_props(session, canvas, INPUTS, lambda image: "u")
    assert props["more"] == {"held": 2, "all": False}
    assert handle(session, DiscHost(), canvas, key_event("m"), INPUTS).ok
    assert shown_regions(session, canvas) == (session.ann.regions, 0)
    handle(session, DiscHost(), canvas, key_event("m"), INPUTS)
    assert shown_regions(session, canvas)[1] == 2


def test_the_answer_count_moves_only_when_the_gesture_is_done(session):
    """The page times a gesture until a view carrying its answer number (`ack`) is drawn; a view rendered while the
    gesture is still running (a refresh from another event) must still carry the previous number."""
    canvas = CanvasState()
    seen = []

    class WatchingHost(DiscHost):
        def predict(self, *args, **kwargs):
            seen.append(canvas_props(session, canvas, INPUTS, lambda image: "u")["ack"])
            return super().predict(*args, **kwargs)

    handle(session, WatchingHost(), canvas, PointEvent(40.5, 40.5), INPUTS)
    assert seen == [0] and canvas_props(session, canvas, INPUTS, lambda image: "u")["ack"] == 1
    handle(session, WatchingHost(), canvas, key_event("a"), INPUTS)  # a key is a gesture too
    assert canvas.answered == 2


def test_side_panels_wait_for_a_pause_in_the_gestures(session):
    host, canvas = DiscHost(), CanvasState()
    reply = handle(session, host, canvas, PointEvent(40.5, 40.5), INPUTS)
    assert canvas.in_flight == 0 and canvas.answered == 1

    async def quick_second_click() -> tuple:
        pending = asyncio.ensure_future(settled_panels(session, canvas, reply, 7, pause=0.05))
        await asyncio.sleep(0.01)
        handle(session, host, canvas, PointEvent(44.5, 40.5, positive=False), INPUTS)
        return await pending

    skipped = asyncio.run(quick_second_click())  # a newer gesture came: its own step draws the panels
    assert len(skipped) == 7 and all(out == gr.skip() for out in skipped)
    canvas.in_flight = 1  # one is being handled right now: the same
    assert all(out == gr.skip() for out in asyncio.run(settled_panels(session, canvas, reply, 7, pause=0.01)))
    canvas.in_flight = 0
    shown = asyncio.run(settled_panels(session, canvas, reply, 7, pause=0.01))
    assert len(shown) == 7 and shown[0] is session and "masks" in shown[4]
    assert all(out == gr.skip() for out in asyncio.run(settled_panels(session, canvas, None, 7, pause=0.0)))
