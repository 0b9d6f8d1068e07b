"""The Annotate tab: open a folder / upload / browse images, type prompts, Segment, and see the masks.

Reviewing and drawing tools live in app/tabs/correct.py (the right column's lower half). Every event here
renders the whole view (`show`), and a reload resumes the folder, image, selection and prompts from the
browser's saved state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import gradio as gr

from app import views
from app.actions import navigate, segment
from app.actions.reply import Reply
from app.canvas import build_canvas
from app.session import SessionState
from app.studio import Studio
from app.tabs.common import guarded, on, toast
from qmn.data.sample import TASKS

BROWSER_KEY = "qmn-studio-session"


@dataclass
class Annotate:
    """The components other tabs read or write."""

    session: gr.State
    browser: gr.BrowserState
    folder: gr.Textbox
    open_btn: gr.Button
    uploads: gr.File
    image_list: gr.Dataframe
    prev_btn: gr.Button
    next_btn: gr.Button
    next_to_review_btn: gr.Button
    source: gr.Image
    canvas: gr.HTML  # the photo with zoom / pan and every gesture (app/tabs/canvas_panel.py)
    viewer: gr.Image  # hidden: the overlay the API returns
    legend: gr.HTML
    status: gr.Markdown
    regions: gr.Dataframe
    task: gr.Dropdown
    prompts: gr.Textbox
    save_prompts_btn: gr.Button
    threshold: gr.Slider
    segment_btn: gr.Button
    run_all_btn: gr.Button
    stop_btn: gr.Button
    run_status: gr.Markdown
    boxes: gr.Textbox
    points: gr.Textbox
    summary: gr.JSON
    selected: gr.Number
    right: gr.Column  # the correct panel (app/tabs/correct.py) is built inside it

    @property
    def view(self) -> list:
        """Outputs of `show`: everything that depends on the session."""
        return [self.session, self.viewer, self.regions, self.legend, self.status, self.selected, self.image_list]

    @property
    def opened(self) -> list:
        """Outputs of `show_opened`: the view plus the raw image."""
        return self.view + [self.source]


def show(session: SessionState, reply: Reply, overlay: bool = True) -> tuple:
    """The view after an action; a refusal's sentence is also a warning toast. `overlay=False` leaves the
    (hidden, API-only) overlay image as it was: the canvas draws the masks itself."""
    toast(reply)
    states = views.folder_states(session)
    return (session, views.overlay(session) if overlay else gr.skip(), views.regions_table(session),
            views.legend_html(session),
            views.status(session, reply.message, states), session.selected, views.image_list(session, states))


def show_opened(session: SessionState, reply: Reply) -> tuple:
    return (*show(session, reply), session.image)


def build(studio: Studio) -> Annotate:
    """Layout of the tab: images on the left, masks in the centre, prompts on the right (above the correct panel)."""
    session = gr.State(SessionState())
    browser = gr.BrowserState(None, storage_key=BROWSER_KEY, secret=studio.browser_secret())
    with gr.Column(scale=1, min_width=240):
        folder = gr.Textbox(label="Folder (inside the workspace; '.' = workspace)", value=".", elem_id="folder")
        open_btn = gr.Button("Open folder", elem_id="open-btn")
        uploads = gr.File(label="Upload images", file_count="multiple", file_types=["image"])
        image_list = gr.Dataframe(headers=views.LIST_COLUMNS, label="Images (click to open)", interactive=False,
                                  elem_id="image-list")
        with gr.Row():
            prev_btn = gr.Button("◀ Previous", elem_id="prev-btn", size="sm")
            next_btn = gr.Button("Next ▶", elem_id="next-btn", size="sm")
            next_to_review_btn = gr.Button("Next to review (j)", elem_id="next-to-review-btn", size="sm")
        source = gr.Image(label="Image (or drop one here)", type="numpy", format="png",
                          sources=["upload", "clipboard"], elem_id="source", height=200)
    with gr.Column(scale=3):
        canvas = build_canvas(elem_id="canvas")
        viewer = gr.Image(label="Masks", type="numpy", format="png", interactive=False, elem_id="viewer",
                          visible=False)
        legend = gr.HTML(elem_id="legend")
        status = gr.Markdown(elem_id="status")
        regions = gr.Dataframe(headers=views.REGION_COLUMNS, label="Masks (click a row to select)",
                               interactive=False, elem_id="regions")
    with gr.Column(scale=2, min_width=300) as right:
        task = gr.Dropdown(list(TASKS), value="instance", label="Task", elem_id="task")
        prompts = gr.Textbox(label="Prompts: class names separated by commas, or a phrase (referring: one per line)",
                             placeholder="person, dog, sky", elem_id="prompts")
        save_prompts_btn = gr.Button("Save prompts as this folder's ontology", size="sm")
        threshold = gr.Slider(0.0, 1.0, value=studio.host.threshold, step=0.01,
                              label="Score threshold (default: the model's calibrated one)", elem_id="threshold")
        segment_btn = gr.Button("Segment", variant="primary", elem_id="segment-btn")
        with gr.Row():
            run_all_btn = gr.Button("Run on all new images", elem_id="run-all-btn")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
        run_status = gr.Markdown(elem_id="run-status")
        with gr.Accordion("Advanced prompts (API-style)", open=False):
            boxes = gr.Textbox(label="Boxes, JSON [[x0, y0, x1, y1], ...]", value="")
            points = gr.Textbox(label="Points, JSON [[x, y, positive], ...]", value="")
            summary = gr.JSON(label="Last result")
        selected = gr.Number(label="Selected mask id", precision=0, elem_id="selected")
    return Annotate(session, browser, folder, open_btn, uploads, image_list, prev_btn, next_btn, next_to_review_btn,
                    source, canvas, viewer,
                  legend,
                  status, regions, task, prompts, save_prompts_btn, threshold, segment_btn, run_all_btn, stop_btn,
                  run_status, boxes, points, summary, selected, right)


def wire(demo: gr.Blocks, studio: Studio, ui: Annotate, model_events: dict) -> None:
    root, host = studio.root, studio.host

    def open_folder(session: SessionState, folder: str) -> tuple:
        reply = navigate.open_folder(session, root, folder)
        return (*show_opened(session, reply), reply.value or gr.skip())

    def upload(session: SessionState, files: Optional[list]) -> tuple:
        return show_opened(session, navigate.upload(session, root, [getattr(f, "name", f) for f in files or []]))

    def open_from_list(session: SessionState, evt: gr.SelectData) -> tuple:
        row = evt.row_value or []
        return show_opened(session, navigate.open_image(session, str(row[0]) if row else ""))

    def previous_image(session: SessionState) -> tuple:
        return show_opened(session, navigate.step_image(session, -1))

    def next_image(session: SessionState) -> tuple:
        return show_opened(session, navigate.step_image(session, 1))

    def next_to_review(session: SessionState) -> tuple:
        return show_opened(session, navigate.next_to_review(session))

    def save_ontology(session: SessionState, prompts: str, task: str) -> tuple:
        reply = toast(navigate.save_ontology(session, prompts, task))
        return (reply.value if reply.ok else gr.skip()), views.status(session, reply.message)

    def segment_image(session: SessionState, image: Any, prompts: str, task: str, threshold: float,
                      boxes: str = "", points: str = "") -> tuple:
        reply = segment.segment(session, host, root, image, prompts, task, threshold, boxes, points)
        return (*show(session, reply), reply.value or gr.skip())

    def run_all(session: SessionState, prompts: str, task: str, threshold: float, progress=gr.Progress()):
        for reply in segment.run_all(session, host, prompts, task, threshold,
                                     lambda items: progress.tqdm(items, desc="segmenting")):
            yield toast(reply).message, views.image_list(session)

    def refresh(session: SessionState) -> tuple:
        return show(session, Reply())

    def restore(session: SessionState, saved: Optional[dict]) -> tuple:
        saved = saved if isinstance(saved, dict) else {}
        reply = navigate.resume(session, root, saved)
        return (*show_opened(session, reply), saved.get("prompts") or gr.skip(), saved.get("task") or gr.skip())

    def remember(session: SessionState, prompts: str, task: str) -> dict:
        return navigate.remembered(session, root, prompts, task)

    private = dict(api_visibility="private")
    on([ui.open_btn.click, ui.folder.submit], open_folder, [ui.session, ui.folder], ui.opened + [ui.prompts],
       api_name="open_folder")
    on(ui.uploads.upload, upload, [ui.session, ui.uploads], ui.opened, api_name="upload")
    on(ui.image_list.select, open_from_list, [ui.session], ui.opened, **private)
    on(ui.prev_btn.click, previous_image, [ui.session], ui.opened, api_name="previous")
    on(ui.next_btn.click, next_image, [ui.session], ui.opened, api_name="next")
    on(ui.next_to_review_btn.click, next_to_review, [ui.session], ui.opened, api_name="next_to_review")
    on(ui.save_prompts_btn.click, save_ontology, [ui.session, ui.prompts, ui.task], [ui.prompts, ui.status],
       api_name="save_ontology")
    on([ui.segment_btn.click, ui.prompts.submit], segment_image,
       [ui.session, ui.source, ui.prompts, ui.task, ui.threshold, ui.boxes, ui.points], ui.view + [ui.summary],
       api_name="segment", **model_events)
    running = on(ui.run_all_btn.click, run_all, [ui.session, ui.prompts, ui.task, ui.threshold],
                 [ui.run_status, ui.image_list], api_name="run_all", **model_events)
    running.then(guarded(refresh, len(ui.view)), [ui.session], ui.view, **private)  # the open image may have changed
    ui.stop_btn.click(None, None, None, cancels=[running])
    on(ui.stop_btn.click, refresh, [ui.session], ui.view, **private)
    restored = ui.opened + [ui.prompts, ui.task]
    demo.load(guarded(restore, len(restored)), [ui.session, ui.browser], restored, **private)
    on([ui.status.change, ui.prompts.change, ui.task.change], remember, [ui.session, ui.prompts, ui.task],
       [ui.browser], show_progress="hidden", **private)
