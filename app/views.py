"""What the annotate tab shows, computed from the session alone (no Gradio): overlay, mask table, legend,
status line and image list. Every event re-renders all of them, so no view can lag behind the state."""
from __future__ import annotations

import html
import time
from typing import Optional

import numpy as np
import pandas as pd

from app import tools
from app.annotations import REVIEW_STATES
from app.session import SessionState

REGION_COLUMNS = ["id", "label", "score", "query type", "review", "visible", "area"]
LIST_COLUMNS = ["image", "state", "exported"]
QUEUE_COLUMNS = ["image", "uncertainty"]


def overlay(session: SessionState) -> Optional[np.ndarray]:
    if session.image is None or session.ann is None:
        return None
    shown = [r for r in session.ann.regions if r.shown]
    return tools.render_overlay(session.image, shown, session.selected, session.box_corner)


def regions_table(session: SessionState) -> pd.DataFrame:
    rows = [[r.id, r.label, round(r.score, 3), r.query_type, r.review, r.visible, r.area]
            for r in (session.ann.regions if session.ann else [])]
    return pd.DataFrame(rows, columns=REGION_COLUMNS)


def legend_html(session: SessionState) -> str:
    ann = session.ann
    if ann is None:
        return "<div class='qmn-legend'>No image open.</div>"
    if not ann.regions:
        text = ("The model found nothing on this image: lower the threshold or change the prompts."
                if ann.segmented else "No masks yet: type prompts and press Segment.")
        return f"<div class='qmn-legend'>{text}</div>"
    items = []
    for r in ann.regions:
        style = "font-weight:bold;text-decoration:underline" if r.id == session.selected else ""
        style += ";text-decoration:line-through;opacity:0.5" if r.review == "rejected" else ""
        hidden = "" if r.visible else " (hidden)"
        items.append(
            f"<span class='qmn-legend-item' style='{style}'><span style='display:inline-block;width:12px;height:12px;"
            f"background:{tools.color_hex(r.id)};margin-right:4px'></span>#{r.id} {html.escape(r.label)}"
            f" {r.score:.2f} · {r.query_type} · {r.review}{hidden}</span>"
        )
    return "<div class='qmn-legend'>" + " &nbsp; ".join(items) + "</div>"


ImageStates = list[tuple[str, str, bool]]  # Workspace.states(): (image name, review state, exported)


def folder_states(session: SessionState) -> ImageStates:
    """Every image's state, read once per render: it opens each annotation file, so the status line and the image
    list of one action share it."""
    return session.workspace.states() if session.folder else []


def status_line(session: SessionState, states: Optional[ImageStates] = None) -> str:
    """One line describing where the session stands now (`states`: `folder_states`, read here when not given)."""
    ann = session.ann
    if ann is None:
        return "Open a folder, pick an example, or upload images."
    counts = ", ".join(f"{ann.count(s)} {s}" for s in REVIEW_STATES if ann.count(s))
    selected = f" · selected #{session.selected}" if session.selected is not None else ""
    return (f"**{ann.image}** ({ann.width}x{ann.height}) · state: {ann.state} · {len(ann.regions)} masks"
            f"{' (' + counts + ')' if counts else ''}{selected} · undo {len(session.undo_stack)} / redo "
            f"{len(session.redo_stack)}{folder_progress(folder_states(session) if states is None else states)}"
            f"{saved_ago(session)}")


def folder_progress(states: ImageStates) -> str:
    """" · 12 of 40 done": how far the folder's review has come (an image is done when a person pressed d)."""
    done = sum(state == "done" for _, state, _ in states)
    return f" · {done} of {len(states)} done" if states else ""


def saved_ago(session: SessionState, now: Optional[float] = None) -> str:
    """" · saved 3 s ago" after the session's last autosave (every edit is saved at once)."""
    if session.saved_at is None:
        return ""
    seconds = max(0, round((time.time() if now is None else now) - session.saved_at))
    return f" · saved {seconds} s ago" if seconds < 120 else f" · saved {seconds // 60} min ago"


def status(session: SessionState, message: str = "", states: Optional[ImageStates] = None) -> str:
    """The state line, then what the last action did."""
    return status_line(session, states) + (f"\n\n{message}" if message else "")


def image_list(session: SessionState, states: Optional[ImageStates] = None) -> pd.DataFrame:
    rows = [(name, state, "yes" if exported else "")
            for name, state, exported in (folder_states(session) if states is None else states)]
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


def queue_table(rows: list[tuple[str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS)
