"""Event handlers of the app: small named methods of `Studio`, one per user action.

Each returns the values of the outputs wired in `app/ui.py`. They raise gr.Error with a one-line
message for anything the user can fix; `user_errors` turns every other exception into such a message
too, so a traceback never reaches the page (it is logged on the server).
"""
import functools
import html
import hashlib
import inspect
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import gradio as gr
import numpy as np
import pandas as pd

from app import tools
from app.annotations import Region
from app.examples import prepare_examples
from app.export import FORMATS, export_folder, write_training_set
from app.finetune import FineTuneRegistry
from app.model_host import ModelHost
from app.session import SessionState, parse_prompts
from app.workspace import MAX_PIXELS, Workspace
from qmn.data.sample import TASKS
from qmn.grabcut import grabcut_from_box
from qmn.io_utils import atomic_path, safe_join

log = logging.getLogger("qmn.app")
REGION_COLUMNS = ["id", "label", "score", "query type", "accepted", "visible", "area"]
LIST_COLUMNS = ["image", "state"]
QUEUE_COLUMNS = ["image", "uncertainty"]
LOSS_COLUMNS = ["step", "loss"]


def _as_user_error(e: Exception) -> gr.Error:
    if isinstance(e, gr.Error):
        return e
    if isinstance(e, (ValueError, FileNotFoundError)):
        return gr.Error(str(e))
    log.exception("unexpected error in a handler")
    return gr.Error(f"Unexpected error ({type(e).__name__}): {e}")


def user_errors(fn):
    """Turn any exception of a handler (plain or generator) into a gr.Error with a clear message."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - converted, logged
                raise _as_user_error(e) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - converted, logged
            raise _as_user_error(e) from None
    return wrapper


def parse_json_list(text: Any, name: str) -> list:
    """'[[10, 20, 50, 60]]' (or an already-parsed list, or '') -> list; ValueError naming `name`."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return []
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        raise ValueError(f"{name}: not valid JSON, expected e.g. [[10, 20, 50, 60]]") from None
    if not isinstance(value, list):
        raise ValueError(f"{name}: expected a JSON list")
    return value


def regions_table(session: SessionState) -> pd.DataFrame:
    rows = [
        [r.id, r.label, round(r.score, 3), r.query_type, r.accepted, r.visible, r.area]
        for r in (session.ann.regions if session.ann else [])
    ]
    return pd.DataFrame(rows, columns=REGION_COLUMNS)


def legend_html(session: SessionState) -> str:
    if not session.ann or not session.ann.regions:
        return "<div class='qmn-legend'>No masks yet: type prompts and press Segment.</div>"
    items = []
    for r in session.ann.regions:
        style = "font-weight:bold;text-decoration:underline" if r.id == session.selected else ""
        hidden = "" if r.visible else " (hidden)"
        items.append(
            f"<span class='qmn-legend-item' style='{style}'><span style='display:inline-block;width:12px;height:12px;"
            f"background:{tools.color_hex(r.id)};margin-right:4px'></span>#{r.id} {html.escape(r.label)}"
            f" {r.score:.2f} · {r.query_type}{hidden}</span>"
        )
    return "<div class='qmn-legend'>" + " &nbsp; ".join(items) + "</div>"


class Studio:
    """The app's shared context (model, workspace root, fine-tune jobs) and its handlers."""

    def __init__(self, host: ModelHost, root: Path, make_examples: bool = True):
        self.host = host
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.finetunes = FineTuneRegistry()
        self.examples: list[tuple[str, str]] = prepare_examples(self.root / "examples") if make_examples else []

    # views ----------------------------------------------------------------------------------------
    def view(self, session: SessionState, message: str = "") -> tuple:
        """(state, overlay, regions table, legend, status, selected id) after any change."""
        overlay = None
        if session.image is not None and session.ann is not None:
            overlay = tools.render_overlay(session.image, session.ann.regions, session.selected, session.box_corner)
        status = message or self.status_line(session)
        return session, overlay, regions_table(session), legend_html(session), status, session.selected

    def status_line(self, session: SessionState) -> str:
        if session.ann is None:
            return "Open a folder, pick an example, or upload images."
        ann = session.ann
        return (
            f"**{ann.image}** ({ann.width}x{ann.height}) · state: {ann.state} · {len(ann.regions)} masks · "
            f"undo {len(session.undo_stack)} / redo {len(session.redo_stack)}"
        )

    def image_list(self, session: SessionState) -> pd.DataFrame:
        if session.folder is None:
            return pd.DataFrame([], columns=LIST_COLUMNS)
        return pd.DataFrame(session.workspace.states(), columns=LIST_COLUMNS)

    def _open(self, session: SessionState, name: Optional[str]) -> tuple:
        """Outputs of every 'open something' action: view + raw image + image list."""
        if name is not None:
            session.open_image(session.workspace, name)
        return (*self.view(session), session.image, self.image_list(session))

    # folder / images --------------------------------------------------------------------------------
    @user_errors
    def open_folder(self, session: SessionState, folder: str) -> tuple:
        """Open a folder inside the workspace ('.' = the workspace itself) and its first image."""
        path = self.root if not folder or folder.strip() in (".", "") else safe_join(self.root, folder.strip())
        ws = Workspace(path)
        session.folder = str(ws.folder)
        names = ws.list_images()
        if not names:
            gr.Warning(f"{folder or '.'}: no images here; upload some")
        session.image = session.ann = session.image_name = None
        return (*self._open(session, names[0] if names else None), ws.load_ontology())

    @user_errors
    def upload_images(self, session: SessionState, files: Optional[list]) -> tuple:
        """Copy uploads into the opened folder (or `uploads/`) under sanitised names; skip corrupt ones."""
        if not files:
            raise gr.Error("no files received")
        if session.folder is None:
            session.folder = str(safe_join(self.root, "uploads"))
            Path(session.folder).mkdir(parents=True, exist_ok=True)
        ws, added, skipped = session.workspace, [], []
        for f in files:
            path = Path(f if isinstance(f, str) else f.name)
            try:
                added.append(ws.add_image_bytes(path.name, path.read_bytes()))
            except ValueError as e:
                skipped.append(str(e))
        if not added:
            raise gr.Error("none of the uploaded files is a readable image: " + "; ".join(skipped))
        if skipped:
            gr.Warning("skipped: " + "; ".join(skipped))
        return self._open(session, added[0])

    @user_errors
    def open_image(self, session: SessionState, name: str) -> tuple:
        return self._open(session, name)

    def open_from_list(self, session: SessionState, evt: gr.SelectData) -> tuple:
        row = evt.row_value or []
        return self.open_image(session, str(row[0]) if row else "")

    @user_errors
    def step_image(self, session: SessionState, offset: int) -> tuple:
        names = session.workspace.list_images()
        if not names:
            raise gr.Error("this folder has no images")
        index = names.index(session.image_name) if session.image_name in names else -offset
        return self._open(session, names[(index + offset) % len(names)])

    def next_image(self, session: SessionState) -> tuple:
        return self.step_image(session, 1)

    def previous_image(self, session: SessionState) -> tuple:
        return self.step_image(session, -1)

    def open_example(self, session: SessionState, evt: gr.SelectData) -> tuple:
        if not self.examples:
            raise gr.Error("no examples available")
        name = Path(self.examples[int(evt.index)][0]).name
        session.folder = str(self.root / "examples")
        return self.open_image(session, name)

    @user_errors
    def save_ontology(self, session: SessionState, prompts: str) -> str:
        items = parse_prompts(prompts)
        session.workspace.save_ontology(items)
        gr.Info(f"saved {len(items)} prompts for this folder")
        return ", ".join(items)

    # model ----------------------------------------------------------------------------------------
    def _current_or_new_image(self, session: SessionState, image: Optional[np.ndarray]) -> None:
        """Make `image` the session's current image, storing it in the folder if it is new."""
        if image is None:
            session.require_image()
            return
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
        if image.shape[0] * image.shape[1] > MAX_PIXELS:
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, over the {MAX_PIXELS // 1_000_000} MP limit")
        if session.image is not None and session.image.shape == image.shape and np.array_equal(session.image, image):
            return
        if session.folder is None:
            session.folder = str(safe_join(self.root, "uploads"))
            Path(session.folder).mkdir(parents=True, exist_ok=True)
        ws = session.workspace
        name = f"image_{hashlib.sha1(image.tobytes()).hexdigest()[:12]}.png"
        if not ws.image_path(name).exists():
            name = ws.add_image_array(Path(name).stem, image)
        session.open_image(ws, name)

    def _predict_regions(self, image: np.ndarray, prompts: list[str], task: str, threshold: float,
                         boxes: list, points: list, first_id: int) -> list[Region]:
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        if not prompts and task != "foreground" and not boxes and not points:
            raise ValueError(f"type at least one prompt for the {task} task (or pick 'foreground', or draw a box)")
        pred = self.host.predict(image, prompts, task, float(threshold), boxes=boxes, points=points)
        regions = []
        for seg in pred.segments:
            mask = seg.mask
            if mask is None:  # detection: the box is the region
                mask = np.zeros(image.shape[:2], bool)
                x0, y0, x1, y1 = (int(round(float(v))) for v in seg.box)
                mask[max(0, y0):y1, max(0, x0):x1] = True
            regions.append(Region(id=first_id + len(regions), label=seg.label, mask=np.asarray(mask, bool),
                                  score=float(seg.score), query_type=seg.query_type))
        return regions

    @user_errors
    def segment(self, session: SessionState, image: Optional[np.ndarray], prompts: str, task: str,
                threshold: float, boxes: str = "", points: str = "") -> tuple:
        """Run the model; accepted masks stay, other proposals are replaced. Also returns a JSON summary."""
        self._current_or_new_image(session, image)
        img, ann = session.require_image()
        prompt_list = parse_prompts(prompts)
        box_list = parse_json_list(boxes, "boxes")
        point_list = [(float(p[0]), float(p[1]), bool(p[2]) if len(p) > 2 else True) for p in parse_json_list(points, "points")]
        kept = [r for r in ann.regions if r.accepted]
        first_id = max((r.id for r in kept), default=0) + 1
        new = self._predict_regions(img, prompt_list, task, threshold, box_list, point_list, first_id)
        with session.edit(state="corrected" if kept else "predicted") as a:
            a.regions, a.task, a.prompts = kept + new, task, prompt_list
        session.selected = None
        if not new:
            gr.Warning("the model found nothing above the threshold: lower it or change the prompts")
        summary = {
            "image": ann.image,
            "segments": [{"id": r.id, "label": r.label, "score": round(r.score, 4), "query_type": r.query_type,
                          "area": r.area} for r in ann.regions],
        }
        return (*self.view(session), self.image_list(session), summary)

    @user_errors
    def run_all(self, session: SessionState, prompts: str, task: str, threshold: float,
                progress=gr.Progress()):
        """Predict every image still 'new' in the folder; a generator so Stop cancels between images."""
        ws = session.workspace
        todo = [n for n, s in ws.states() if s == "new"]
        if not todo:
            yield "No unlabeled images left.", self.image_list(session)
            return
        prompt_list = parse_prompts(prompts)
        for i, name in enumerate(progress.tqdm(todo, desc="segmenting")):
            try:
                image = ws.read_image(name)
                ann = ws.load(name, image.shape[:2])
                ann.regions = self._predict_regions(image, prompt_list, task, threshold, [], [], 1)
            except ValueError as e:
                gr.Warning(str(e))
                continue
            ann.task, ann.prompts, ann.state = task, prompt_list, "predicted"
            ws.save(ann)
            yield f"{i + 1}/{len(todo)} done ({name})", self.image_list(session)
        yield f"Done: {len(todo)} images segmented.", self.image_list(session)

    # selection and review ---------------------------------------------------------------------------
    def click_image(self, session: SessionState, mode: str, label: str, method: str, prompts: str,
                    evt: gr.SelectData) -> tuple:
        """A click on the overlay: select the mask under it, or place a box corner in box mode."""
        x, y = (int(v) for v in evt.index)
        if mode == "box":
            return self.box_click(session, x, y, label, method, prompts)
        return self.select_at(session, x, y)

    @user_errors
    def select_at(self, session: SessionState, x: int, y: int) -> tuple:
        _, ann = session.require_image()
        session.selected = tools.region_at(ann.regions, int(x), int(y))
        return self.view(session)

    @user_errors
    def select_region(self, session: SessionState, region_id: Optional[float]) -> tuple:
        _, ann = session.require_image()
        if region_id is not None and ann.region(int(region_id)) is None:
            raise gr.Error(f"no mask with id {int(region_id)} on this image")
        session.selected = None if region_id is None else int(region_id)
        return self.view(session)

    def select_from_table(self, session: SessionState, evt: gr.SelectData) -> tuple:
        row = evt.row_value or []
        return self.select_region(session, row[0] if row else None)

    @user_errors
    def accept(self, session: SessionState) -> tuple:
        region = session.selected_region()
        with session.edit():
            session.ann.region(region.id).accepted = True
        return self.view(session)

    @user_errors
    def accept_all(self, session: SessionState) -> tuple:
        session.require_image()
        with session.edit() as ann:
            for r in ann.regions:
                r.accepted = True
        return self.view(session)

    @user_errors
    def reject(self, session: SessionState) -> tuple:
        region = session.selected_region()
        with session.edit() as ann:
            ann.regions = [r for r in ann.regions if r.id != region.id]
        session.selected = None
        return self.view(session)

    @user_errors
    def relabel(self, session: SessionState, label: str) -> tuple:
        region = session.selected_region()
        if not label or not label.strip():
            raise gr.Error("type the new label first")
        with session.edit() as ann:
            ann.region(region.id).label = label.strip()
            ann.region(region.id).accepted = True
        return self.view(session)

    @user_errors
    def toggle_visibility(self, session: SessionState) -> tuple:
        """Hide/show the selected mask (or show all when none is selected); not an annotation change."""
        _, ann = session.require_image()
        region = ann.region(session.selected)
        for r in [region] if region else ann.regions:
            r.visible = not r.visible if region else True
        session.workspace.save(ann)
        return self.view(session)

    @user_errors
    def undo(self, session: SessionState) -> tuple:
        if not session.undo():
            gr.Info("nothing to undo")
        return self.view(session)

    @user_errors
    def redo(self, session: SessionState) -> tuple:
        if not session.redo():
            gr.Info("nothing to redo")
        return self.view(session)

    # drawing tools --------------------------------------------------------------------------------
    def _new_label(self, label: str, prompts: str) -> str:
        return (label or "").strip() or next(iter(parse_prompts(prompts)), "object")

    @user_errors
    def box_click(self, session: SessionState, x: int, y: int, label: str, method: str, prompts: str) -> tuple:
        """First click stores a corner, second click makes the box and segments inside it."""
        session.require_image()
        if session.box_corner is None:
            session.box_corner = (int(x), int(y))
            return self.view(session, "Box: first corner set, click the opposite corner.")
        corner, session.box_corner = session.box_corner, None
        img, ann = session.require_image()
        box = tools.box_from_corners(corner, (x, y), ann.width, ann.height)
        return self.add_box(session, json.dumps(box), label, method, prompts)

    @user_errors
    def add_box(self, session: SessionState, box: str, label: str, method: str, prompts: str = "") -> tuple:
        """New region from an xyxy box: the model's box prompt, or GrabCut (also the fallback)."""
        img, ann = session.require_image()
        values = parse_json_list(box, "box")
        if len(values) != 4:
            raise gr.Error("box must be [x0, y0, x1, y1] in pixels")
        xyxy = tools.box_from_corners(values[:2], [v - 1 for v in values[2:]], ann.width, ann.height)
        name = self._new_label(label, prompts)
        region = None
        if method == "model":
            found = [r for r in self._predict_regions(img, [name], "instance", 0.0, [xyxy], [], ann.next_id())
                     if r.query_type == "prompted" and r.mask.any()]
            if found:
                region = max(found, key=lambda r: r.score)
            else:
                gr.Warning("the model returned no mask for this box: used GrabCut instead")
        if region is None:
            region = Region(id=ann.next_id(), label=name, mask=grabcut_from_box(img, xyxy), query_type="manual")
        region.id, region.label, region.accepted = ann.next_id(), name, True
        with session.edit() as a:
            a.regions.append(region)
        session.selected = region.id
        return self.view(session)

    @user_errors
    def load_into_editor(self, session: SessionState) -> dict:
        img, _ = session.require_image()
        return {"background": img, "layers": [], "composite": None}

    def _brush(self, session: SessionState, editor: Optional[dict], erase: bool, label: str, prompts: str) -> tuple:
        img, ann = session.require_image()
        painted = tools.stroke_mask(editor, img.shape[:2])
        region = ann.region(session.selected)
        if region is None and erase:
            raise gr.Error("select the mask to erase from first")
        with session.edit() as a:
            if region is None:
                region = Region(id=a.next_id(), label=self._new_label(label, prompts), mask=painted, accepted=True)
                a.regions.append(region)
            else:
                target = a.region(region.id)
                target.mask, target.alpha, target.accepted = tools.apply_brush(target.mask, painted, erase), None, True
        session.selected = region.id
        return self.view(session)

    @user_errors
    def brush_add(self, session: SessionState, editor: Optional[dict], label: str, prompts: str) -> tuple:
        return self._brush(session, editor, False, label, prompts)

    @user_errors
    def brush_erase(self, session: SessionState, editor: Optional[dict], label: str, prompts: str) -> tuple:
        return self._brush(session, editor, True, label, prompts)

    @user_errors
    def refine_edges(self, session: SessionState, trimap_width: float) -> tuple:
        """Alpha matte for the selected mask (hair, fur); the cut-out export uses it."""
        region = session.selected_region()
        alpha = tools.refine_with_matting(session.image, region.mask, int(trimap_width))
        with session.edit() as ann:
            target = ann.region(region.id)
            target.alpha, target.mask = alpha, alpha >= 0.5
        return self.view(session, f"Refined edges of mask #{region.id} with matting.")

    # export -------------------------------------------------------------------------------------------
    @user_errors
    def export(self, session: SessionState, formats: Optional[list], encoding: str) -> tuple:
        """Zip of the chosen formats; every COCO file re-read with pycocotools before it is offered."""
        result = export_folder(session.workspace, formats or list(FORMATS), encoding)
        served = Path(gr.utils.get_upload_folder()) / "exports" / f"{time.time_ns()}" / result.zip_path.name
        served.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.zip_path, served)
        if session.ann is not None:
            session.ann.state = "exported"
        return str(served), result.report, self.image_list(session)

    # fine-tune ----------------------------------------------------------------------------------------
    @user_errors
    def finetune_start(self, session: SessionState, minutes: float, request: gr.Request) -> tuple:
        ws = session.workspace
        run_dir = ws.state_dir / "finetune" / time.strftime("run_%Y%m%d_%H%M%S")
        data_dir = write_training_set(ws, run_dir / "data")
        init = self.host.checkpoint
        if init is None:
            init = run_dir / "init.safetensors"
            self.host.model.save(str(init))
        self.finetunes.start(request.session_hash, data_dir, init, float(minutes), run_dir)
        return (f"Fine-tune started in {run_dir}", gr.Timer(active=True))

    @user_errors
    def finetune_status(self, request: gr.Request) -> tuple:
        """Status dict, loss curve, markdown and the polling timer (stopped once the run ends)."""
        job = self.finetunes.get(request.session_hash)
        if job is None:
            status = {"phase": "idle", "progress": 0.0, "losses": []}
        else:
            status = job.status()
        losses = pd.DataFrame(status.pop("losses"), columns=LOSS_COLUMNS)
        md = f"**{status['phase']}** · {100 * status['progress']:.0f}%"
        if status.get("error"):
            md += f" · {status['error']}"
        return status, losses, md, gr.Timer(active=status["phase"] == "running")

    @user_errors
    def finetune_cancel(self, request: gr.Request) -> str:
        job = self.finetunes.get(request.session_hash)
        if job is None or not job.running:
            raise gr.Error("no fine-tune is running")
        job.cancel()
        return "Fine-tune cancelled."

    @user_errors
    def finetune_switch(self, request: gr.Request) -> tuple:
        job = self.finetunes.get(request.session_hash)
        checkpoint = job.status()["checkpoint"] if job else None
        if not checkpoint:
            raise gr.Error("no finished fine-tune checkpoint to switch to")
        self.host.load(checkpoint)
        return f"Switched to {checkpoint}. Re-predict unreviewed images to review them.", self.model_info()

    @user_errors
    def rollback(self) -> tuple:
        self.host.rollback()
        return "Rolled back to the previous model.", self.model_info()

    @user_errors
    def repredict_unreviewed(self, session: SessionState, prompts: str, task: str, threshold: float,
                             progress=gr.Progress()):
        """Re-run the (new) model on images not yet corrected, then order them by uncertainty."""
        ws = session.workspace
        todo = [n for n, s in ws.states() if s in ("new", "predicted")]
        scored = []
        for name in progress.tqdm(todo, desc="re-predicting"):
            image = ws.read_image(name)
            ann = ws.load(name, image.shape[:2])
            prompt_list = parse_prompts(prompts) or ann.prompts
            ann.regions = self._predict_regions(image, prompt_list, task, threshold, [], [], 1)
            ann.task, ann.prompts, ann.state = task, prompt_list, "predicted"
            ws.save(ann)
            scored.append((name, round(tools.uncertainty(ann.regions, float(threshold)), 4)))
            yield pd.DataFrame(sorted(scored, key=lambda t: -t[1]), columns=QUEUE_COLUMNS)
        session.review_queue = [n for n, _ in sorted(scored, key=lambda t: -t[1])]
        yield pd.DataFrame(sorted(scored, key=lambda t: -t[1]), columns=QUEUE_COLUMNS)

    # model tab --------------------------------------------------------------------------------------
    def model_info(self) -> dict:
        return self.host.info()

    def model_banner(self) -> str:
        info = self.host.info()
        warn = "⚠️ " if self.host.untrained else ""
        return f"{warn}Model: {info['status']} · {info['device']} · {info['parameters']:,} parameters"

    @user_errors
    def load_checkpoint(self, path: str, files: Optional[list], device: str) -> tuple:
        """Load a .safetensors checkpoint given by path, or uploaded together with its .json."""
        if files:
            target = self.root / ".qmn" / "checkpoints"
            target.mkdir(parents=True, exist_ok=True)
            for f in files:
                src = Path(f if isinstance(f, str) else f.name)
                with atomic_path(target / src.name) as tmp:  # a half-copied checkpoint never sits under its name
                    shutil.copyfile(src, tmp)
            found = [target / Path(f if isinstance(f, str) else f.name).name for f in files]
            weights = [p for p in found if p.suffix == ".safetensors"]
            if not weights:
                raise gr.Error("upload a .safetensors file (and its .json config)")
            path = str(weights[0])
        if not path:
            raise gr.Error("give a checkpoint path or upload one")
        if device:
            self.host.device = device
        self.host.load(path)
        return self.model_info(), self.model_banner()
