"""The annotation canvas in the Annotate tab: gestures on the photo call the same actions as the buttons
(app/canvas_actions.py), and the canvas follows every other event through the status and legend it shows.

A gesture answers in two steps: first the canvas (its new view, the session, the raw image when it changed), then
the side panels (mask table, legend, status, image list) in a `.then`, so the drawn mask does not wait for them
(skipping the panels saved ~80 ms of a disc-fill click's round trip; with the real fill the median did not move
measurably, `bench/canvas_latency.py --app`). The panels' step waits PANELS_PAUSE s first and is skipped when
another gesture came meanwhile (that one's step will draw them): on 2 cores, panels redrawn while the next click's
GrabCut runs made clicks in quick succession slower. The hidden overlay image
(`viewer`, kept for the API's outputs) is not re-rendered at all: it costs hundreds of milliseconds on a large photo
and the canvas draws the masks itself.
"""
from __future__ import annotations

import asyncio
from typing import Any

import gradio as gr

from app.actions.reply import Reply
from app.canvas import gesture_of, image_src, listen
from app.canvas_actions import CanvasState, Inputs, canvas_props, handle
from app.session import SessionState
from app.studio import Studio
from app.tabs.annotate import Annotate, show
from app.tabs.common import guarded, on
from app.tabs.correct import Correct

PANELS_PAUSE = 0.3  # s without a new gesture before the side panels are redrawn


async def settled_panels(session: SessionState, canvas: CanvasState, reply: Reply | None, outputs: int,
                         pause: float = PANELS_PAUSE) -> tuple:
    """The side panels (`show`) after a gesture's `reply`, once no newer gesture came within `pause` s (sleeping,
    no CPU); `outputs` skips when there is nothing to show or a newer gesture (done or still running) will show
    its own."""
    if reply is None:
        return tuple(gr.skip() for _ in range(outputs))
    answered = canvas.answered
    await asyncio.sleep(pause)
    if canvas.answered != answered or canvas.in_flight:
        return tuple(gr.skip() for _ in range(outputs))
    return show(session, reply, overlay=False)


def wire(studio: Studio, ui: Annotate, panel: Correct, model_events: dict) -> None:
    state = gr.State(CanvasState())
    host = studio.host

    def inputs(prompts: str, task: str, label: str, box_method: str) -> Inputs:
        return Inputs(prompts or "", task or "instance", label or "", box_method or "grabcut")

    def gesture(session: SessionState, canvas: CanvasState, prompts: str, task: str, label: str, box_method: str,
                evt: gr.EventData) -> tuple:
        event = gesture_of(evt)
        if event is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), None
        before = session.image_name
        given = inputs(prompts, task, label, box_method)
        reply = handle(session, host, canvas, event, given)
        opened = session.image if session.image_name != before else gr.skip()
        canvas.last_view = canvas_props(session, canvas, given, image_src)
        return session, opened, canvas.last_view, canvas, reply

    async def panels(session: SessionState, canvas: CanvasState, reply: Reply | None) -> tuple:
        return await settled_panels(session, canvas, reply, len(ui.view))

    def refresh(session: SessionState, canvas: CanvasState, prompts: str, task: str, label: str,
                box_method: str) -> Any:
        """The canvas after another event; nothing is sent when the page already shows exactly this view (the
        panels' step of every gesture changes the status, which lands here)."""
        view = canvas_props(session, canvas, inputs(prompts, task, label, box_method), image_src)
        if view == canvas.last_view:
            return gr.skip()
        canvas.last_view = view
        return view

    fields = [ui.session, state, ui.prompts, ui.task, panel.label, panel.box_method]
    answer = gr.State(None)  # the gesture's Reply, handed to the panels' step
    listen(ui.canvas, guarded(gesture, 5), fields, [ui.session, ui.source, ui.canvas, state, answer],
           **model_events).then(guarded(panels, len(ui.view)), [ui.session, state, answer], ui.view,
                                show_progress="hidden", api_visibility="private", concurrency_limit=None)
    on([ui.status.change, ui.legend.change, ui.prompts.blur, ui.task.change], refresh, fields, [ui.canvas],
       trigger_mode="always_last", show_progress="hidden", api_visibility="private")
