"""The Model tab: what is served (checkpoint, device, sizes, training record) and loading another checkpoint.
A load brings the new model's calibrated threshold to the annotate tab's slider."""
from __future__ import annotations

from typing import Optional

import gradio as gr

from app.actions import model
from app.studio import Studio
from app.tabs.annotate import Annotate
from app.tabs.common import on, toast


def info_panel(studio: Studio) -> gr.JSON:
    """The model info panel, made before the tabs (the fine-tune tab updates it) and rendered in this tab."""
    return gr.JSON(value=studio.host.info(), label="Current model (record = its model card)", elem_id="model-info",
                   render=False)


def build_and_wire(studio: Studio, ui: Annotate, info: gr.JSON, model_banner: gr.Markdown) -> None:
    host = studio.host
    info.render()
    path = gr.Textbox(label="Checkpoint path (.safetensors, with its .json beside it)")
    files = gr.File(label="…or upload .safetensors + .json", file_count="multiple")
    device = gr.Dropdown(["cpu", "cuda"], value=host.device, label="Device")
    load_btn = gr.Button("Load checkpoint")
    message = gr.Markdown()

    def load_checkpoint(path: str, files: Optional[list], device: str) -> tuple:
        paths = [getattr(f, "name", f) for f in files or []]
        reply = toast(model.load_checkpoint(host, studio.root, path, paths, device))
        return host.info(), model.banner(host), host.threshold, reply.message

    on(load_btn.click, load_checkpoint, [path, files, device], [info, model_banner, ui.threshold, message],
       api_name="load_checkpoint")
