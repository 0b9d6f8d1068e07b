"""The Fine-tune tab: train on the folder's done images in the background, watch phase, progress and loss,
read before / after on the held-out images, switch (only to a model that scored at least as well) or roll
back; re-predict unreviewed images into a review queue with the new model."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from app import views
from app.actions import finetune, navigate, segment
from app.actions.model import banner
from app.actions.reply import Reply
from app.session import SessionState
from app.studio import Studio
from app.tabs.annotate import Annotate, show_opened
from app.tabs.common import on, toast

LOSS_COLUMNS = ["step", "loss"]


def build_and_wire(studio: Studio, ui: Annotate, model_banner: gr.Markdown, model_info: gr.JSON,
                   model_events: dict) -> None:
    host, jobs = studio.host, studio.finetunes
    gr.Markdown("Train on the images you marked **done** (press d on a reviewed image) in the background; a part "
                "of them is held out to score the current and the new model.")
    minutes = gr.Slider(1, 60, value=5, step=1, label="Minutes")
    with gr.Row():
        start_btn = gr.Button("Fine-tune on my labels", variant="primary", elem_id="ft-start")
        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="ft-cancel")
        switch_btn = gr.Button("Switch to new model", interactive=False, elem_id="ft-switch")
        rollback_btn = gr.Button("Roll back", elem_id="ft-rollback")
    md = gr.Markdown(elem_id="ft-md")
    plot = gr.LinePlot(x="step", y="loss", label="Loss", value=None)
    status_json = gr.JSON(label="Phase, progress and held-out metrics (before / after)")
    timer = gr.Timer(1.0, active=False)
    repredict_btn = gr.Button("Re-predict unreviewed images → review queue")
    queue = gr.Dataframe(headers=views.QUEUE_COLUMNS, label="Review queue (most uncertain first; click to open)",
                         interactive=False)

    def start(session: SessionState, minutes: float) -> tuple:
        reply = toast(finetune.start(session, host, jobs, minutes))
        return reply.message, gr.Timer(active=reply.ok)

    def poll(session: SessionState) -> tuple:
        reply = finetune.status(session, jobs)
        st = dict(reply.value)
        losses = pd.DataFrame(st.pop("losses"), columns=LOSS_COLUMNS)
        active = st["phase"] in ("preparing", "training", "evaluating")
        return st, losses, reply.message, gr.Timer(active=active), gr.Button(interactive=st["may_switch"])

    def cancel(session: SessionState) -> str:
        return toast(finetune.cancel(session, jobs)).message

    def after_model_change(reply: Reply) -> tuple:
        """A switched or rolled-back model brings its own calibrated threshold to the slider."""
        toast(reply)
        return reply.message, host.info(), banner(host), host.threshold

    def switch(session: SessionState) -> tuple:
        return after_model_change(finetune.switch(session, host, jobs))

    def rollback() -> tuple:
        return after_model_change(finetune.rollback(host))

    def repredict(session: SessionState, prompts: str, task: str, threshold: float, progress=gr.Progress()):
        for reply in segment.repredict_unreviewed(session, host, prompts, task, threshold,
                                                  lambda items: progress.tqdm(items, desc="re-predicting")):
            yield views.queue_table(toast(reply).value or []), reply.message

    def open_queued(session: SessionState, evt: gr.SelectData) -> tuple:
        row = evt.row_value or []
        return show_opened(session, navigate.open_image(session, str(row[0]) if row else ""))

    changed = [md, model_info, model_banner, ui.threshold]
    on(start_btn.click, start, [ui.session, minutes], [md, timer], api_name="finetune_start")
    on(timer.tick, poll, [ui.session], [status_json, plot, md, timer, switch_btn], api_name="finetune_status",
       show_progress="hidden")
    on(cancel_btn.click, cancel, [ui.session], [md], api_name="finetune_cancel")
    on(switch_btn.click, switch, [ui.session], changed, api_name="finetune_switch")
    on(rollback_btn.click, rollback, [], changed, api_name="rollback")
    on(repredict_btn.click, repredict, [ui.session, ui.prompts, ui.task, ui.threshold], [queue, md],
       api_name="repredict", **model_events)
    on(queue.select, open_queued, [ui.session], ui.opened, api_visibility="private")
