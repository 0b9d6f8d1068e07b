"""Model calls: segment the current image, run on every new image, re-predict the unreviewed ones for the
review queue. What a person vouched for (accepted / edited) is never replaced by a new prediction."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from app import tools
from app.actions.navigate import uploads_folder
from app.actions.reply import Reply, refusals_as_replies
from app.annotations import Region
from app.model_host import ModelHost
from app.session import SessionState
from app.workspace import MAX_PIXELS
from qmn.data.sample import TASKS
from qmn.prompts import parse_prompts


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


def predict_regions(host: ModelHost, image: np.ndarray, prompts: list[str], task: str, threshold: float,
                    boxes: list, points: list, first_id: int) -> list[Region]:
    """The model's segments as proposed regions numbered from `first_id` (a detection box becomes its mask)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not prompts and task != "foreground" and not boxes and not points:
        raise ValueError(f"type at least one prompt for the {task} task (or pick 'foreground', or draw a box)")
    pred = host.predict(image, prompts, task, float(threshold), boxes=boxes, points=points)
    regions = []
    for seg in pred.segments:
        mask = seg.mask
        if mask is None:
            mask = np.zeros(image.shape[:2], bool)
            x0, y0, x1, y1 = (int(round(float(v))) for v in seg.box)
            mask[max(0, y0):y1, max(0, x0):x1] = True
        regions.append(Region(id=first_id + len(regions), label=seg.label, mask=np.asarray(mask, bool),
                              score=float(seg.score), query_type=seg.query_type))
    return regions


def use_image(session: SessionState, root: Path, image: Optional[np.ndarray]) -> None:
    """Make `image` (sent to the API or dropped on the page) current, storing it in the folder if it is new."""
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
    ws = uploads_folder(session, root)
    name = f"image_{hashlib.sha1(image.tobytes()).hexdigest()[:12]}.png"
    if not ws.image_path(name).exists():
        name = ws.add_image_array(Path(name).stem, image)
    session.open_image(ws, name)


@refusals_as_replies
def segment(session: SessionState, host: ModelHost, root: Path, image: Optional[np.ndarray], prompts: str,
            task: str, threshold: float, boxes: str = "", points: str = "") -> Reply:
    """Run the model; accepted / edited masks stay, the rest is replaced by new proposals. Value: a JSON summary."""
    use_image(session, root, image)
    img, ann = session.require_image()
    prompt_list = parse_prompts(prompts, task)
    box_list = parse_json_list(boxes, "boxes")
    point_list = [(float(p[0]), float(p[1]), bool(p[2]) if len(p) > 2 else True) for p in parse_json_list(points, "points")]
    kept = [r for r in ann.regions if r.vouched]
    first_id = max((r.id for r in kept), default=0) + 1
    new = predict_regions(host, img, prompt_list, task, threshold, box_list, point_list, first_id)
    with session.edit() as a:
        a.regions, a.task, a.prompts, a.segmented = kept + new, task, prompt_list, True
        a.done = a.done and not new  # new proposals need a decision before the image is finished again
    session.selected = ann.next_proposal()
    summary = {"image": ann.image, "segments": [{"id": r.id, "label": r.label, "score": round(r.score, 4),
                                                 "query_type": r.query_type, "area": r.area, "review": r.review}
                                                for r in ann.regions]}
    if not new:
        return Reply(f"The model found nothing above the threshold {float(threshold):.2f}: lower it or change the "
                     "prompts.", ok=False, value=summary)
    return Reply(f"{len(new)} proposals (threshold {float(threshold):.2f}): a accepts, r rejects the outlined one; "
                 "d marks the image done.", value=summary)


def _segment_saved(session: SessionState, host: ModelHost, names: Iterable[str], prompts: str, task: str,
                   threshold: float) -> Iterator[tuple[str, Optional[float], str]]:
    """Predict each named image of the folder and save it as proposals; yields (name, uncertainty or None, error)."""
    ws = session.workspace
    for name in names:
        try:
            image = ws.read_image(name)
            ann = ws.load(name, image.shape[:2])
            prompt_list = parse_prompts(prompts, task) or ann.prompts
            ann.regions = predict_regions(host, image, prompt_list, task, threshold, [], [], 1)
        except ValueError as e:
            yield name, None, str(e)
            continue
        ann.task, ann.prompts, ann.segmented, ann.exported = task, prompt_list, True, False
        ws.save(ann)
        if name == session.image_name:  # the open image must show what was just saved, or its next edit undoes it
            session.ann, session.selected, session.undo_stack, session.redo_stack = ann, ann.next_proposal(), [], []
        yield name, tools.uncertainty(ann.regions, float(threshold)), ""


@refusals_as_replies
def run_all(session: SessionState, host: ModelHost, prompts: str, task: str, threshold: float,
            progress: Any = None) -> Iterator[Reply]:
    """Predict every image still 'new' in the folder; a generator so Stop cancels between images."""
    todo = [n for n, state, _ in session.workspace.states() if state == "new"]
    if not todo:
        yield Reply("No new images left: every image has proposals or review work.")
        return
    failed = []
    for i, (name, _, error) in enumerate(_segment_saved(session, host, progress(todo) if progress else todo,
                                                         prompts, task, threshold)):
        failed += [f"{name}: {error}"] if error else []
        yield Reply(f"{i + 1}/{len(todo)} done ({name})", ok=not error)
    yield Reply(f"Done: {len(todo) - len(failed)} images segmented." + (" Failed: " + "; ".join(failed) if failed else ""),
                ok=not failed)


@refusals_as_replies
def repredict_unreviewed(session: SessionState, host: ModelHost, prompts: str, task: str, threshold: float,
                         progress: Any = None) -> Iterator[Reply]:
    """Re-run the (new) model on images nobody reviewed yet; value = [(image, uncertainty)], most uncertain first."""
    todo = [n for n, state, _ in session.workspace.states() if state in ("new", "proposed")]
    if not todo:
        yield Reply("Every image has review work on it: nothing to re-predict.", value=[])
        return
    scored: list[tuple[str, float]] = []
    for name, score, error in _segment_saved(session, host, progress(todo) if progress else todo, prompts, task,
                                             threshold):
        if error:
            yield Reply(f"{name}: {error}", ok=False, value=sorted(scored, key=lambda t: -t[1]))
            continue
        scored.append((name, round(float(score), 4)))
        yield Reply(f"Re-predicted {len(scored)}/{len(todo)}.", value=sorted(scored, key=lambda t: -t[1]))
    session.review_queue = [n for n, _ in sorted(scored, key=lambda t: -t[1])]
    yield Reply(f"Review queue: {len(scored)} images, most uncertain first.", value=sorted(scored, key=lambda t: -t[1]))
