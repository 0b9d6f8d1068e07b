"""Layout of the app and the wiring of its events. Handlers live in `app/handlers.py`.

Model calls share one queue group (concurrency_id="model") so a CPU is never oversubscribed; every
other event is fast and per-session. Named endpoints (api_name) make the app scriptable with
gradio_client: segment, run_all, select_region, accept, reject, relabel, add_box, undo, redo,
export, finetune_start, finetune_status, finetune_cancel.
"""
from __future__ import annotations

import gradio as gr

from app.export import ENCODINGS, FORMATS
from app.handlers import LIST_COLUMNS, QUEUE_COLUMNS, REGION_COLUMNS, Studio
from app.session import SessionState
from qmn.data.sample import TASKS

MODEL_QUEUE = "model"

# Keyboard shortcuts (ignored while typing in a text field): n/→ next, p/← previous, a accept,
# r reject, ctrl+z undo, ctrl+y / ctrl+shift+z redo, s segment.
SHORTCUTS_JS = """
() => {
  const keys = {ArrowRight: 'next-btn', n: 'next-btn', ArrowLeft: 'prev-btn', p: 'prev-btn',
                a: 'accept-btn', r: 'reject-btn', s: 'segment-btn'};
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
"""


def build_app(studio: Studio, model_concurrency: int = 1) -> gr.Blocks:
    """The whole UI. `studio` holds the model and the workspace; `model_concurrency` = parallel predicts."""
    model_events = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=model_concurrency)
    with gr.Blocks(title="QueryMeld Studio") as demo:
        session = gr.State(SessionState())
        gr.Markdown("## QueryMeld Studio — text-prompted segmentation you can correct, export and fine-tune")
        banner = gr.Markdown(studio.model_banner(), elem_id="model-banner")
        with gr.Tabs():
            with gr.Tab("Annotate", id="annotate"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=240):
                        folder = gr.Textbox(label="Folder (inside the workspace; '.' = workspace)", value=".", elem_id="folder")
                        open_btn = gr.Button("Open folder", elem_id="open-btn")
                        uploads = gr.File(label="Upload images", file_count="multiple", file_types=["image"])
                        image_list = gr.Dataframe(headers=LIST_COLUMNS, label="Images (click to open)",
                                                  interactive=False, elem_id="image-list")
                        with gr.Row():
                            prev_btn = gr.Button("◀ Previous", elem_id="prev-btn", size="sm")
                            next_btn = gr.Button("Next ▶", elem_id="next-btn", size="sm")
                        source = gr.Image(label="Image (or drop one here)", type="numpy", format="png",
                                          sources=["upload", "clipboard"], elem_id="source", height=200)
                    with gr.Column(scale=3):
                        viewer = gr.Image(label="Masks (click a mask to select it)", type="numpy", format="png",
                                          interactive=False, elem_id="viewer", buttons=["download", "fullscreen"])
                        legend = gr.HTML(elem_id="legend")
                        status = gr.Markdown(elem_id="status")
                        regions = gr.Dataframe(headers=REGION_COLUMNS, label="Masks (click a row to select)",
                                               interactive=False, elem_id="regions")
                    with gr.Column(scale=2, min_width=300):
                        task = gr.Dropdown(list(TASKS), value="instance", label="Task", elem_id="task")
                        prompts = gr.Textbox(label="Prompts (comma-separated classes, or a phrase)",
                                             placeholder="person, dog, sky", elem_id="prompts")
                        save_prompts_btn = gr.Button("Save prompts as this folder's ontology", size="sm")
                        threshold = gr.Slider(0.0, 1.0, value=studio.host.model.cfg.score_threshold, step=0.01,
                                              label="Score threshold (default: the model's calibrated one)", elem_id="threshold")
                        segment_btn = gr.Button("Segment", variant="primary", elem_id="segment-btn")
                        with gr.Row():
                            run_all_btn = gr.Button("Run on all unlabeled images", elem_id="run-all-btn")
                            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                        run_status = gr.Markdown()
                        with gr.Accordion("Advanced prompts (API-style)", open=False):
                            boxes = gr.Textbox(label="Boxes, JSON [[x0, y0, x1, y1], ...]", value="")
                            points = gr.Textbox(label="Points, JSON [[x, y, positive], ...]", value="")
                            summary = gr.JSON(label="Last result")
                        gr.Markdown("### Correct")
                        selected = gr.Number(label="Selected mask id", precision=0, elem_id="selected")
                        label = gr.Textbox(label="Label (relabel / new masks)", elem_id="label")
                        with gr.Row():
                            accept_btn = gr.Button("Accept", elem_id="accept-btn", size="sm")
                            reject_btn = gr.Button("Reject", elem_id="reject-btn", size="sm")
                            relabel_btn = gr.Button("Relabel", elem_id="relabel-btn", size="sm")
                        with gr.Row():
                            accept_all_btn = gr.Button("Accept all", size="sm")
                            visibility_btn = gr.Button("Hide / show", size="sm")
                        with gr.Row():
                            undo_btn = gr.Button("Undo", elem_id="undo-btn", size="sm")
                            redo_btn = gr.Button("Redo", elem_id="redo-btn", size="sm")
                        click_mode = gr.Radio(["select", "box"], value="select", label="Click on the image to",
                                              info="box: click two opposite corners", elem_id="click-mode")
                        box_method = gr.Radio(["model", "grabcut"], value="model", label="Box fills with",
                                              info="the model's box prompt (GrabCut if it finds nothing) or GrabCut")
                        with gr.Accordion("Brush", open=False):
                            editor = gr.ImageEditor(type="numpy", image_mode="RGBA", label="Paint, then Add or Erase",
                                                    brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"),
                                                    layers=False, transforms=(), elem_id="editor")
                            load_editor_btn = gr.Button("Load image into the brush canvas", size="sm")
                            with gr.Row():
                                brush_add_btn = gr.Button("Add painted", size="sm")
                                brush_erase_btn = gr.Button("Erase painted", size="sm")
                        with gr.Accordion("Refine edges (matting)", open=False):
                            trimap_width = gr.Slider(2, 60, value=10, step=1, label="Trimap width (px)")
                            refine_btn = gr.Button("Refine selected mask", size="sm")
            with gr.Tab("Export", id="export"):
                formats = gr.CheckboxGroup(list(FORMATS), value=list(FORMATS), label="Formats")
                encoding = gr.Radio(list(ENCODINGS), value="rle", label="COCO instance masks as",
                                    info="polygons lose holes: the report lists each annotation's IoU")
                export_btn = gr.Button("Export", variant="primary", elem_id="export-btn")
                export_file = gr.File(label="Download", elem_id="export-file")
                export_report = gr.JSON(label="Export report (checked with pycocotools)")
            with gr.Tab("Fine-tune", id="finetune"):
                gr.Markdown("Train on your corrected images in the background, then switch to the new model.")
                minutes = gr.Slider(1, 60, value=5, step=1, label="Minutes")
                with gr.Row():
                    ft_start_btn = gr.Button("Fine-tune on my labels", variant="primary", elem_id="ft-start")
                    ft_cancel_btn = gr.Button("Cancel", variant="stop")
                    ft_switch_btn = gr.Button("Switch to new model")
                    ft_rollback_btn = gr.Button("Roll back")
                ft_md = gr.Markdown()
                ft_plot = gr.LinePlot(x="step", y="loss", label="Loss", value=None)
                ft_status = gr.JSON(label="Progress and metrics (before / after)")
                ft_timer = gr.Timer(1.0, active=False)
                repredict_btn = gr.Button("Re-predict unreviewed images → review queue")
                review_queue = gr.Dataframe(headers=QUEUE_COLUMNS, label="Review queue (most uncertain first; click to open)",
                                            interactive=False)
            with gr.Tab("Model", id="model"):
                model_info = gr.JSON(value=studio.model_info(), label="Current model (record = its model card)")
                ckpt_path = gr.Textbox(label="Checkpoint path (.safetensors, with its .json beside it)")
                ckpt_files = gr.File(label="…or upload .safetensors + .json", file_count="multiple")
                device = gr.Dropdown(["cpu", "cuda"], value=studio.host.device, label="Device")
                load_btn = gr.Button("Load checkpoint")
            with gr.Tab("Examples", id="examples"):
                gallery = gr.Gallery(value=studio.examples, columns=4, label="Click an example to open it",
                                     allow_preview=False, elem_id="examples")

        view = [session, viewer, regions, legend, status, selected]
        opened = view + [source, image_list]
        # folder / navigation
        gr.on([open_btn.click, folder.submit], studio.open_folder, [session, folder], opened + [prompts],
              api_name="open_folder")
        uploads.upload(studio.upload_images, [session, uploads], opened, api_name="upload")
        image_list.select(studio.open_from_list, [session], opened, api_visibility="private")
        prev_btn.click(studio.previous_image, [session], opened, api_name="previous")
        next_btn.click(studio.next_image, [session], opened, api_name="next")
        gallery.select(studio.open_example, [session], opened, api_visibility="private")
        review_queue.select(studio.open_from_list, [session], opened, api_visibility="private")
        save_prompts_btn.click(studio.save_ontology, [session, prompts], [prompts], api_name="save_ontology")
        # model
        gr.on([segment_btn.click, prompts.submit], studio.segment,
              [session, source, prompts, task, threshold, boxes, points], view + [image_list, summary],
              api_name="segment", **model_events)
        run_all = run_all_btn.click(studio.run_all, [session, prompts, task, threshold], [run_status, image_list],
                                    api_name="run_all", **model_events)
        stop_btn.click(None, None, None, cancels=[run_all])
        # selection and review
        viewer.select(studio.click_image, [session, click_mode, label, box_method, prompts], view,
                      api_visibility="private", **model_events)
        regions.select(studio.select_from_table, [session], view, api_visibility="private")
        selected.submit(studio.select_region, [session, selected], view, api_name="select_region")
        accept_btn.click(studio.accept, [session], view, api_name="accept")
        accept_all_btn.click(studio.accept_all, [session], view, api_name="accept_all")
        reject_btn.click(studio.reject, [session], view, api_name="reject")
        relabel_btn.click(studio.relabel, [session, label], view, api_name="relabel")
        visibility_btn.click(studio.toggle_visibility, [session], view, api_name="toggle_visibility")
        undo_btn.click(studio.undo, [session], view, api_name="undo")
        redo_btn.click(studio.redo, [session], view, api_name="redo")
        # drawing tools (add_box is the API twin of two box clicks)
        box_api = gr.Textbox(visible=False)
        box_api.submit(studio.add_box, [session, box_api, label, box_method, prompts], view, api_name="add_box",
                       **model_events)
        load_editor_btn.click(studio.load_into_editor, [session], [editor], api_name="load_editor")
        brush_add_btn.click(studio.brush_add, [session, editor, label, prompts], view, api_name="brush_add")
        brush_erase_btn.click(studio.brush_erase, [session, editor, label, prompts], view, api_name="brush_erase")
        refine_btn.click(studio.refine_edges, [session, trimap_width], view, api_name="refine_edges")
        # export
        export_btn.click(studio.export, [session, formats, encoding], [export_file, export_report, image_list],
                         api_name="export")
        # fine-tune
        ft_start_btn.click(studio.finetune_start, [session, minutes], [ft_md, ft_timer], api_name="finetune_start")
        ft_timer.tick(studio.finetune_status, None, [ft_status, ft_plot, ft_md, ft_timer], api_name="finetune_status",
                      show_progress="hidden")
        ft_cancel_btn.click(studio.finetune_cancel, None, [ft_md], api_name="finetune_cancel")
        ft_switch_btn.click(studio.finetune_switch, None, [ft_md, model_info], api_name="finetune_switch")
        ft_rollback_btn.click(studio.rollback, None, [ft_md, model_info], api_name="rollback")
        repredict_btn.click(studio.repredict_unreviewed, [session, prompts, task, threshold], [review_queue],
                            api_name="repredict", **model_events)
        # model tab
        load_btn.click(studio.load_checkpoint, [ckpt_path, ckpt_files, device], [model_info, banner],
                       api_name="load_checkpoint")
    demo.queue(default_concurrency_limit=8)
    return demo


def launch_kwargs(studio: Studio) -> dict:
    """launch() arguments every entry point (launch.py, tests, benches) must use."""
    return dict(js=SHORTCUTS_JS, allowed_paths=[str(studio.root / "examples")], run_history=False,
                show_error=False)


def free_port(host: str = "127.0.0.1") -> int:
    import socket

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
