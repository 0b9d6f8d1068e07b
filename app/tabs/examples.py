"""The Examples tab: a gallery of bundled images; a click opens one in the Annotate tab."""
from __future__ import annotations

import gradio as gr

from app.actions import navigate
from app.session import SessionState
from app.studio import Studio
from app.tabs.annotate import Annotate, show_opened
from app.tabs.common import on


def build_and_wire(studio: Studio, ui: Annotate) -> None:
    gallery = gr.Gallery(value=studio.examples, columns=4, label="Click an example to open it", allow_preview=False,
                         elem_id="examples")

    def open_example(session: SessionState, evt: gr.SelectData) -> tuple:
        return show_opened(session, navigate.open_example(session, studio.examples_dir, studio.examples, int(evt.index)))

    on(gallery.select, open_example, [ui.session], ui.opened, api_visibility="private")
