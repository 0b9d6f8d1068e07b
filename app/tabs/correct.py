"""The correct panel of the Annotate tab: review (accept / reject / relabel / done, undo / redo), box, brush and
edge refinement, plus the keyboard shortcuts that click its buttons. Every event renders the annotate view."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import gradio as gr

from app.actions import draw, review
from app.session import SessionState
from app.studio import Studio
from app.tabs.annotate import Annotate, show
from app.tabs.common import on, toast

# Keyboard shortcuts (ignored while typing in a text field): n/→ next, p/← previous, a accept, r reject,
# d done, s segment, ctrl+z undo, ctrl+y / ctrl+shift+z redo. Each clicks a button, so a shortcut does exactly
# what its button does, with the same messages.
SHORTCUTS = {"ArrowRight": "next-btn", "n": "next-btn", "ArrowLeft": "prev-btn", "p": "prev-btn", "a": "accept-btn",
             "r": "reject-btn", "d": "done-btn", "s": "segment-btn", "j": "next-to-review-btn"}
SHORTCUTS_JS = """
() => {
  const keys = %s;
  document.addEventListener('keydown', (e) => {
    const tag = (e.target && e.target.tagName) || '';
    if (tag === 'INPUT' || tag === 'TEXTAREA' || (e.target && e.target.isContentEditable)) return;
    let id = null;
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z') id = e.shiftKey ? 'redo-btn' : 'undo-btn';
    else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'y') id = 'redo-btn';
    else if (!e.ctrlKey && !e.metaKey && !e.altKey) id = keys[e.key];
    const btn = id && document.getElementById(id);
    if (btn) { e.preventDefault(); btn.click(); }
  });
}
""" % SHORTCUTS


@dataclass
class Correct:
    label: gr.Textbox
    accept_btn: gr.Button
    reject_btn: gr.Button
    relabel_btn: gr.Button
    done_btn: gr.Button
    accept_all_btn: gr.Button
    visibility_btn: gr.Button
    undo_btn: gr.Button
    redo_btn: gr.Button
    click_mode: gr.Radio
    box_method: gr.Radio
    editor: gr.ImageEditor
    load_editor_btn: gr.Button
    brush_add_btn: gr.Button
    brush_erase_btn: gr.Button
    trimap_width: gr.Slider
    refine_btn: gr.Button


def build() -> Correct:
    gr.Markdown("### Review and correct")
    label = gr.Textbox(label="Label (relabel / new masks)", elem_id="label")
    with gr.Row():
        accept_btn = gr.Button("Accept (a)", elem_id="accept-btn", size="sm")
        reject_btn = gr.Button("Reject (r)", elem_id="reject-btn", size="sm")
        relabel_btn = gr.Button("Relabel", elem_id="relabel-btn", size="sm")
    with gr.Row():
        done_btn = gr.Button("Image done (d)", elem_id="done-btn", size="sm", variant="primary")
        accept_all_btn = gr.Button("Accept all", elem_id="accept-all-btn", size="sm")
        visibility_btn = gr.Button("Hide / show", size="sm")
    with gr.Row():
        undo_btn = gr.Button("Undo", elem_id="undo-btn", size="sm")
        redo_btn = gr.Button("Redo", elem_id="redo-btn", size="sm")
    click_mode = gr.Radio(["select", "box"], value="select", label="Click on the image to",
                          info="box: click two opposite corners", elem_id="click-mode")
    box_method = gr.Radio(["grabcut", "model"], value="grabcut", label="Boxes and clicks fill with",
                          info="GrabCut seeded by the box / clicks (best on held-out photos: bench/interactive.py) "
                               "or the model's prompted query")
    with gr.Accordion("Brush", open=False):
        editor = gr.ImageEditor(type="numpy", image_mode="RGBA", label="Paint, then Add or Erase",
                                brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"), layers=False, transforms=(),
                                elem_id="editor")
        load_editor_btn = gr.Button("Load image into the brush canvas", size="sm")
        with gr.Row():
            brush_add_btn = gr.Button("Add painted", size="sm")
            brush_erase_btn = gr.Button("Erase painted", size="sm")
    with gr.Accordion("Refine edges (matting)", open=False):
        trimap_width = gr.Slider(0, 60, value=0, step=1, label="Band width (px each side of the edge; 0 = auto: "
                                 "only where the mask is ragged or unsure)")
        refine_btn = gr.Button("Refine selected mask", size="sm")
    return Correct(label, accept_btn, reject_btn, relabel_btn, done_btn, accept_all_btn, visibility_btn, undo_btn,
                   redo_btn, click_mode, box_method, editor, load_editor_btn, brush_add_btn, brush_erase_btn,
                   trimap_width, refine_btn)


def wire(studio: Studio, ui: Annotate, panel: Correct, model_events: dict) -> None:
    host = studio.host

    def click_image(session: SessionState, mode: str, label: str, method: str, prompts: str, task: str,
                    evt: gr.SelectData) -> tuple:
        """A click on the overlay: select the mask under it, or place a box corner in box mode."""
        x, y = (int(v) for v in evt.index)
        if mode == "box":
            return show(session, draw.box_click(session, host, x, y, label, method, prompts, task))
        return show(session, review.select_at(session, x, y))

    def select_from_table(session: SessionState, evt: gr.SelectData) -> tuple:
        row = evt.row_value or []
        return show(session, review.select_region(session, row[0] if row else None))

    def select_region(session: SessionState, region_id: Optional[float]) -> tuple:
        return show(session, review.select_region(session, region_id))

    def relabel(session: SessionState, label: str) -> tuple:
        return show(session, review.relabel(session, label))

    def add_box(session: SessionState, box: str, label: str, method: str, prompts: str, task: str) -> tuple:
        return show(session, draw.add_box(session, host, box, label, method, prompts, task))

    def load_editor(session: SessionState) -> dict:
        reply = toast(draw.load_into_editor(session))
        return reply.value if reply.ok else gr.skip()

    def brush_add(session: SessionState, editor: Optional[dict], label: str, prompts: str, task: str) -> tuple:
        return show(session, draw.brush(session, editor, False, label, prompts, task))

    def brush_erase(session: SessionState, editor: Optional[dict], label: str, prompts: str, task: str) -> tuple:
        return show(session, draw.brush(session, editor, True, label, prompts, task))

    def refine_edges(session: SessionState, trimap_width: float) -> tuple:
        return show(session, draw.refine_edges(session, trimap_width))

    def button(action):
        """A one-input review button: the action on the session, then the view."""
        def handler(session: SessionState) -> tuple:
            return show(session, action(session))
        handler.__name__ = action.__name__
        return handler

    s, private = ui.session, dict(api_visibility="private")
    on(ui.viewer.select, click_image, [s, panel.click_mode, panel.label, panel.box_method, ui.prompts, ui.task],
       ui.view, **private, **model_events)
    on(ui.regions.select, select_from_table, [s], ui.view, **private)
    on(ui.selected.submit, select_region, [s, ui.selected], ui.view, api_name="select_region")
    for btn, action in ((panel.accept_btn, review.accept), (panel.accept_all_btn, review.accept_all),
                        (panel.reject_btn, review.reject), (panel.done_btn, review.mark_done),
                        (panel.visibility_btn, review.toggle_visibility), (panel.undo_btn, review.undo),
                        (panel.redo_btn, review.redo)):
        on(btn.click, button(action), [s], ui.view, api_name=action.__name__)
    on(panel.relabel_btn.click, relabel, [s, panel.label], ui.view, api_name="relabel")
    box_api = gr.Textbox(visible=False)  # add_box is the API twin of two box clicks
    on(box_api.submit, add_box, [s, box_api, panel.label, panel.box_method, ui.prompts, ui.task], ui.view,
       api_name="add_box", **model_events)
    on(panel.load_editor_btn.click, load_editor, [s], [panel.editor], api_name="load_editor")
    brush_inputs = [s, panel.editor, panel.label, ui.prompts, ui.task]
    on(panel.brush_add_btn.click, brush_add, brush_inputs, ui.view, api_name="brush_add")
    on(panel.brush_erase_btn.click, brush_erase, brush_inputs, ui.view, api_name="brush_erase")
    on(panel.refine_btn.click, refine_edges, [s, panel.trimap_width], ui.view, api_name="refine_edges")
