"""The Export tab: formats, mask encoding, whether unreviewed proposals go in too; a zip to download and the
report (what went in by review state, what was left out, pycocotools checks)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Optional

import gradio as gr

from app import views
from app.actions import export
from app.export import ENCODINGS, FORMATS
from app.session import SessionState
from app.tabs.annotate import Annotate
from app.tabs.common import on, toast


def served_copy(zip_path: Path) -> str:
    """A copy under Gradio's upload folder, the one place the browser may fetch a file this app made."""
    served = Path(gr.utils.get_upload_folder()) / "exports" / f"{time.time_ns()}" / zip_path.name
    served.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(zip_path, served)
    return str(served)


def build_and_wire(ui: Annotate) -> None:
    formats = gr.CheckboxGroup(list(FORMATS), value=list(FORMATS), label="Formats")
    encoding = gr.Radio(list(ENCODINGS), value="rle", label="COCO instance masks as",
                        info="polygons lose holes: the report lists each annotation's IoU")
    proposals = gr.Checkbox(False, label="Also export unreviewed proposals",
                            info='labelled in COCO as attributes {"review": "proposed"}', elem_id="export-proposals")
    export_btn = gr.Button("Export", variant="primary", elem_id="export-btn")
    message = gr.Markdown(elem_id="export-message")
    export_file = gr.File(label="Download", elem_id="export-file")
    report = gr.JSON(label="Export report (checked with pycocotools)")

    def run_export(session: SessionState, formats: Optional[list], encoding: str, include_proposals: bool = False):
        reply = toast(export.export(session, formats, encoding, bool(include_proposals)))
        if not reply.ok:
            return gr.skip(), gr.skip(), views.image_list(session), reply.message
        return served_copy(reply.value.zip_path), reply.value.report, views.image_list(session), reply.message

    on(export_btn.click, run_export, [ui.session, formats, encoding, proposals],
       [export_file, report, ui.image_list, message], api_name="export")
