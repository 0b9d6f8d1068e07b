"""The annotation canvas in the Annotate tab: gestures on the photo call the same actions as the buttons
(app/canvas_actions.py), and the canvas follows every other event through the status and legend it shows.

A gesture's reply skips the hidden overlay image (`viewer`, kept for the API's outputs): rendering it costs
hundreds of milliseconds on a large photo and the canvas draws the masks itself.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from app.canvas import gesture_of, image_src, listen
from app.canvas_actions import CanvasState, Inputs, canvas_props, handle
from app.session import SessionState
from app.studio import Studio
from app.tabs.annotate import Annotate, show
from app.tabs.common import guarded, on
from app.tabs.correct import Correct


def wire(studio: Studio, ui: Annotate, panel: Correct, model_events: dict) -> None:
    state = gr.State(CanvasState())
    host = studio.host

    def inputs(prompts: str, task: str, label: str, box_method: str) -> Inputs:
        return Inputs(prompts or "", task or "instance", label or "", box_method or "grabcut")

    def gesture(session: SessionState, canvas: CanvasState, prompts: str, task: str, label: str, box_method: str,
                evt: gr.EventData) -> tuple:
        event = gesture_of(evt)
        if event is None:
            return tuple(gr.skip() for _ in range(len(ui.opened) + 2))
        before = session.image_name
        given = inputs(prompts, task, label, box_method)
        reply = handle(session, host, canvas, event, given)
        opened = session.image if session.image_name != before else gr.skip()
        return (*show(session, reply, overlay=False), opened, canvas_props(session, canvas, given, image_src), canvas)

    def refresh(session: SessionState, canvas: CanvasState, prompts: str, task: str, label: str,
                box_method: str) -> dict[str, Any]:
        return canvas_props(session, canvas, inputs(prompts, task, label, box_method), image_src)

    fields = [ui.session, state, ui.prompts, ui.task, panel.label, panel.box_method]
    listen(ui.canvas, guarded(gesture, len(ui.opened) + 2), fields, ui.opened + [ui.canvas, state], **model_events)
    on([ui.status.change, ui.legend.change, ui.prompts.blur, ui.task.change], refresh, fields, [ui.canvas],
       trigger_mode="always_last", show_progress="hidden", api_visibility="private")
