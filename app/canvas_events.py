"""Typed gestures of the annotation canvas (app/canvas.js), parsed from the JSON the browser sends.

The browser only converts screen positions into image pixels and says what the user did; every
decision (which mask, which class, what the model runs) is made in Python on these dataclasses, so
handlers are plain functions testable without a browser. No Gradio here.

Coordinates are continuous image pixels: pixel (col, row) covers [col, col+1) x [row, row+1), so a
click in the middle of pixel (10, 20) arrives as (10.5, 20.5); `PointEvent.pixel` floors it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

# Keys the canvas forwards to Python, and what they mean. The browser receives this table in the
# widget's props (app/canvas_view.py), so it is the one place a shortcut is defined.
KEY_ACTIONS: dict[str, str] = {
    "a": "accept", "enter": "accept", "d": "done", "r": "reject", "delete": "reject", "backspace": "reject",
    "ctrl+z": "undo", "u": "undo", "ctrl+y": "redo", "ctrl+shift+z": "redo",
    "n": "next", "arrowright": "next", "p": "previous", "arrowleft": "previous", "j": "next_to_review", "m": "more",
}
CLASS_KEYS = tuple("123456789")


@dataclass(frozen=True)
class PointEvent:
    """Click = positive point, shift-click (or the canvas' negative toggle) = negative point."""

    x: float
    y: float
    positive: bool = True

    @property
    def pixel(self) -> tuple[int, int]:
        return int(math.floor(self.x)), int(math.floor(self.y))


@dataclass(frozen=True)
class BoxEvent:
    """Drag = box, xyxy in continuous image pixels (x0 < x1, y0 < y1), clipped to the image."""

    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class StrokeEvent:
    """One brush or eraser stroke: the path in image pixels and the brush radius in image pixels."""

    points: tuple[tuple[float, float], ...]
    radius: float
    erase: bool = False


@dataclass(frozen=True)
class SelectEvent:
    """Click in select mode (or outside the polygon being edited): pick the mask under (x, y)."""

    x: float
    y: float

    @property
    def pixel(self) -> tuple[int, int]:
        return int(math.floor(self.x)), int(math.floor(self.y))


@dataclass(frozen=True)
class KeyEvent:
    """A shortcut pressed over the canvas. `action` is from KEY_ACTIONS or "class" (keys 1-9), then
    `class_index` (0-based) names the class for the next mask, or the new class of the selected one."""

    key: str
    action: str
    class_index: Optional[int] = None


@dataclass(frozen=True)
class PolygonEvent:
    """The edited outline of mask `region_id`: COCO-style rings [[x1, y1, x2, y2, ...], ...]."""

    region_id: int
    polygons: tuple[tuple[float, ...], ...]


CanvasEvent = Union[PointEvent, BoxEvent, StrokeEvent, SelectEvent, KeyEvent, PolygonEvent]


def _num(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"canvas event: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _numbers(values: Any, name: str) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"canvas event: {name!r} must be a list of numbers")
    return tuple(_num({name: v}, name) for v in values)


def key_event(key: str) -> KeyEvent:
    """KeyEvent of a key name as the browser writes it ("a", "ctrl+z", "3"); ValueError if unbound."""
    name = key.lower()
    if name in CLASS_KEYS:
        return KeyEvent(name, "class", int(name) - 1)
    if name not in KEY_ACTIONS:
        raise ValueError(f"canvas event: key {key!r} has no action")
    return KeyEvent(name, KEY_ACTIONS[name])


def _point(d: Mapping[str, Any]) -> PointEvent:
    return PointEvent(_num(d, "x"), _num(d, "y"), bool(d.get("positive", True)))


def _box(d: Mapping[str, Any]) -> BoxEvent:
    values = _numbers(d.get("box"), "box")
    if len(values) != 4:
        raise ValueError("canvas event: 'box' must be [x0, y0, x1, y1]")
    x0, y0, x1, y1 = values
    return BoxEvent((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))


def _stroke(d: Mapping[str, Any]) -> StrokeEvent:
    points = d.get("points")
    if not isinstance(points, list) or not points:
        raise ValueError("canvas event: a stroke needs at least one point")
    pairs = tuple(_numbers(p, "points") for p in points)
    if any(len(p) != 2 for p in pairs):
        raise ValueError("canvas event: stroke points must be [x, y] pairs")
    radius = _num(d, "radius")
    if radius <= 0:
        raise ValueError(f"canvas event: brush radius must be > 0, got {radius}")
    return StrokeEvent(tuple((p[0], p[1]) for p in pairs), radius, bool(d.get("erase", False)))


def _polygon(d: Mapping[str, Any]) -> PolygonEvent:
    rings = d.get("polygons")
    if not isinstance(rings, list):
        raise ValueError("canvas event: 'polygons' must be a list of [x1, y1, ...] rings")
    parsed = tuple(_numbers(r, "polygons") for r in rings)
    if any(len(r) % 2 for r in parsed):
        raise ValueError("canvas event: a polygon ring has an odd number of coordinates")
    return PolygonEvent(int(_num(d, "id")), parsed)


_PARSERS = {
    "point": _point,
    "box": _box,
    "stroke": _stroke,
    "select": lambda d: SelectEvent(_num(d, "x"), _num(d, "y")),
    "key": lambda d: key_event(str(d.get("key", ""))),
    "polygon": _polygon,
}


def parse_event(data: Optional[Mapping[str, Any]]) -> Optional[CanvasEvent]:
    """The typed event of one gesture payload, None for an empty payload (Gradio may fire `input`
    without one); ValueError naming the problem for a malformed one."""
    if not data:
        return None
    kind = data.get("type")
    if kind not in _PARSERS:
        raise ValueError(f"canvas event: unknown type {kind!r}, expected one of {', '.join(_PARSERS)}")
    return _PARSERS[kind](data)
