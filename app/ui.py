"""The app: one tab module each (app/tabs/), composed here, plus the launch helpers every entry point uses.

Model calls share one queue group (concurrency_id="model") so a CPU is never oversubscribed; every other
event is fast and per-session. Named endpoints (api_name) make the app scriptable with gradio_client:
open_folder, upload, next, previous, segment, run_all, select_region, accept, accept_all, reject, mark_done,
relabel, add_box, undo, redo, export, finetune_start, finetune_status, finetune_cancel, finetune_switch,
rollback, repredict, load_checkpoint. Refusals come back as the status message, never as an error.
"""
from __future__ import annotations

import socket

import gradio as gr

from app.actions.model import banner
from app.studio import Studio
from app.tabs import annotate, canvas_panel, correct, examples, export, finetune, model

MODEL_QUEUE = "model"


def build_app(studio: Studio, model_concurrency: int = 1) -> gr.Blocks:
    """The whole UI. `studio` holds the model and the workspace; `model_concurrency` = parallel predicts."""
    model_events = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=model_concurrency)
    with gr.Blocks(title="QueryMeld Studio") as demo:
        gr.Markdown("## QueryMeld Studio — text-prompted segmentation you can correct, export and fine-tune")
        model_banner = gr.Markdown(banner(studio.host), elem_id="model-banner")
        model_info = model.info_panel(studio)
        with gr.Tabs():
            with gr.Tab("Annotate", id="annotate"):
                with gr.Row():
                    ui = annotate.build(studio)
                with ui.right:
                    panel = correct.build()
            with gr.Tab("Export", id="export"):
                export.build_and_wire(ui)
            with gr.Tab("Fine-tune", id="finetune"):
                finetune.build_and_wire(studio, ui, model_banner, model_info, model_events)
            with gr.Tab("Model", id="model"):
                model.build_and_wire(studio, ui, model_info, model_banner)
            with gr.Tab("Examples", id="examples"):
                examples.build_and_wire(studio, ui)
        annotate.wire(demo, studio, ui, model_events)
        correct.wire(studio, ui, panel, model_events)
        canvas_panel.wire(studio, ui, panel, model_events)
    demo.queue(default_concurrency_limit=8)
    return demo


def launch_kwargs(studio: Studio) -> dict:
    """launch() arguments every entry point (launch.py, tests, benches) must use."""
    return dict(js=correct.SHORTCUTS_JS, allowed_paths=[str(studio.examples_dir)], run_history=False,
                show_error=False)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_in_background(studio: Studio, host: str = "127.0.0.1", port: int | None = None,
                        model_concurrency: int = 1) -> tuple[gr.Blocks, str]:
    """Launch without blocking (tests, benchmarks); returns (demo, local URL). Call demo.close() after."""
    demo = build_app(studio, model_concurrency=model_concurrency)
    _, url, _ = demo.launch(server_name=host, server_port=port or free_port(host), prevent_thread_lock=True,
                            quiet=True, **launch_kwargs(studio))
    return demo, url
