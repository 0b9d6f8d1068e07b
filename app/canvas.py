"""The annotation canvas widget: a gr.HTML whose js_on_load (app/canvas.js) draws the photo with
zoom / pan, the mask overlay and the selected outline, and sends every gesture as ONE `input` event.

Use it from a tab:

    canvas = build_canvas()
    listen(canvas, handler, [state, ...], [canvas, ...])   # = canvas.input(..., trigger_mode="multiple")

    def handler(state, ..., evt: gr.EventData):
        event = gesture_of(evt)          # PointEvent | BoxEvent | StrokeEvent | SelectEvent | KeyEvent
        ...                              # | PolygonEvent | None (an input without a gesture)
        return render_props(image_src(img), img.shape[:2], regions, classes, selected), ...

The gesture travels in the event data, not in the component's value, so the photo and overlay are
never uploaded back; the value (Python -> browser) is `render_props`' dict. This is the only module
of the canvas that imports Gradio (events: app/canvas_events.py, pixels: app/canvas_view.py).
"""
from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import gradio as gr
import numpy as np

from app.canvas_events import CanvasEvent, parse_event

_HERE = Path(__file__).resolve().parent
CANVAS_JS = (_HERE / "canvas.js").read_text(encoding="utf-8")
CANVAS_CSS = (_HERE / "canvas.css").read_text(encoding="utf-8")

# Static markup: everything dynamic is drawn by canvas.js, so Gradio's template re-render (on each
# new value) finds the same string and leaves the DOM, the listeners and the canvas untouched.
_TEMPLATE = """
<div class="qmn-canvas" tabindex="0" style="--qmn-height: {height}px">
  <div class="qmn-toolbar">
    <button data-mode="point" title="Click: positive point; shift-click: negative; drag: box (C)">Point</button>
    <button data-toggle="negative" title="Clicks add negative points (X)">&minus; neg</button>
    <button data-mode="select" title="Click a mask to select it; drag: box (V)">Select</button>
    <button data-mode="brush" title="Paint onto the selected mask, or a new one; [ and ] size (B)">Brush</button>
    <button data-mode="eraser" title="Erase from the selected mask; [ and ] size (E)">Eraser</button>
    <button data-mode="polygon" title="Drag vertices of the selected mask; click an edge adds one; right- or alt-click removes (G)">Vertices</button>
    <button data-action="fit" title="Fit the photo (F); wheel zooms, space-drag or middle-drag pans">Fit</button>
    <label>Opacity <input class="qmn-opacity" type="range" min="0" max="100" value="45"></label>
    <span class="qmn-classes"></span>
  </div>
  <div class="qmn-stage"><canvas></canvas></div>
  <div class="qmn-status"><span class="qmn-zoom"></span><span class="qmn-pos"></span><span class="qmn-brush"></span></div>
</div>
"""


def build_canvas(value: Optional[dict[str, Any]] = None, *, height: int = 640, elem_id: str = "qmn-canvas",
                 **kwargs: Any) -> gr.HTML:
    """The widget (call inside a Blocks). `value` is a `render_props` dict or None (empty canvas)."""
    return gr.HTML(value=value, html_template=_TEMPLATE.format(height=int(height)), css_template=CANVAS_CSS,
                   js_on_load=CANVAS_JS, elem_id=elem_id, **kwargs)


def listen(canvas: gr.HTML, fn: Callable, inputs: Any, outputs: Any, **kwargs: Any) -> Any:
    """`canvas.input(fn, inputs, outputs)` with the settings gestures need: trigger_mode="multiple"
    (Gradio's default "once" DROPS a gesture made while the previous one is still running, e.g. the
    second of two quick key presses) and a private endpoint (the gesture arrives as gr.EventData,
    which gradio_client cannot send) and no progress overlay (it would cover the canvas at every
    click). Events of one listener run in order, one at a time, unless a larger concurrency_limit
    is passed. Returns the Dependency."""
    kwargs.setdefault("trigger_mode", "multiple")
    kwargs.setdefault("show_progress", "hidden")
    kwargs.setdefault("api_visibility", "private")
    return canvas.input(fn, inputs, outputs, **kwargs)


def gesture_of(evt: gr.EventData) -> Optional[CanvasEvent]:
    """The typed gesture of a canvas `input` event (None when Gradio fired one without a gesture)."""
    data = getattr(evt, "_data", None)
    return parse_event(data.get("gesture") if isinstance(data, dict) else None)


_SERVED: dict[int, tuple[weakref.ref, Path]] = {}  # id(photo array) -> (that array, its served file)


def image_src(image: np.ndarray) -> str:
    """A URL the browser can load the full-resolution photo from, lossless (PNG).

    The file lands in Gradio's cache folder (served to the page, as gr.Image outputs are) under a
    content hash, so the browser fetches and caches it once per photo however often the view is
    re-rendered, while each update sends only the small overlay. The URL is remembered per array
    object (photos are replaced, never changed in place, by the app), so a re-render after each
    gesture does not hash 4 MB again (~5 ms of a click on a 1280x1024 photo).
    """
    key = id(image)
    known = _SERVED.get(key)
    if known is None or known[0]() is not image or not known[1].exists():
        known = (weakref.ref(image, lambda _: _SERVED.pop(key, None)), _served_file(image))
        _SERVED[key] = known
    return f"gradio_api/file={known[1]}"


def _served_file(image: np.ndarray) -> Path:
    """The photo's PNG in Gradio's cache folder, named by a hash of its content (written once)."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()[:20]
    path = Path(gr.utils.get_upload_folder()) / "qmn_canvas" / f"{digest}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise ValueError(f"could not encode the photo ({image.dtype} {image.shape}) as PNG")
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(png.tobytes())
        tmp.replace(path)  # a half-written photo is never served under its name
    return path
