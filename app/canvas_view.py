"""What the annotation canvas shows, made in Python: the class-colour table, the props dict the
widget draws (photo URL, one overlay PNG of all masks, the selected mask's outline) and the pixel
conversions of the canvas' gestures (brush strokes and edited polygons back to masks).

Why one overlay PNG: the browser then blends one image at any zoom with the opacity slider, and
each update costs one small PNG (a one-channel class index, cropped to the masks) instead of one
per mask.
Why the outline as polygons: the browser strokes it at a constant screen width at any zoom, and
the same rings are the handles of vertex editing. No Gradio here.
"""
from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

import cv2
import numpy as np

from app.canvas_events import KEY_ACTIONS, CLASS_KEYS, PolygonEvent, StrokeEvent
from app.tools import PALETTE
from qmn.data.mask_codec import mask_to_polygons, polygons_to_mask


class MaskLike(Protocol):
    """What the renderer needs of a mask (app.annotations.Region fits). A mask is drawn unless its
    optional `shown` (or, lacking that, `visible`) attribute is False."""

    id: int
    label: str
    mask: np.ndarray


@dataclass(frozen=True)
class ClassTable:
    """Fixed colour per class name: the n-th class of the ontology (`names`) gets palette colour n,
    any other name (`extra`: labels in use outside it) a colour hashed from the name, so a class
    keeps its colour on every image. Number key k picks the k-th of names + extra."""

    names: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    @property
    def all_names(self) -> tuple[str, ...]:
        return self.names + self.extra

    def color(self, name: str) -> tuple[int, int, int]:
        index = self.names.index(name) if name in self.names else zlib.crc32(name.encode("utf-8"))
        return tuple(int(c) for c in PALETTE[index % len(PALETTE)])

    def hex(self, name: str) -> str:
        return "#%02x%02x%02x" % self.color(name)

    def name_at(self, index: Optional[int]) -> Optional[str]:
        """The class of number key index+1, None when there are fewer classes."""
        names = self.all_names
        return names[index] if index is not None and 0 <= index < len(names) else None

    def with_name(self, name: str) -> "ClassTable":
        """This table plus `name` as an extra class (a label in use outside the ontology)."""
        return self if name in self.all_names else ClassTable(self.names, self.extra + (name,))


def is_shown(m: MaskLike) -> bool:
    return bool(getattr(m, "shown", getattr(m, "visible", True)))


def png_data_url(image: np.ndarray) -> str:
    """data: URL of a 2-D uint8 image as PNG (fast compression: it is sent once and then dropped)."""
    ok, png = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("could not encode the mask overlay as PNG")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")


def _bbox(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return None if rows.size == 0 else (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


@dataclass(frozen=True)
class Overlay:
    """All shown masks as one index image: pixel value v > 0 is drawn in `colors[v - 1]`; `index`
    covers the image from `origin` (x, y), the bounding box of the masks, so small masks are cheap."""

    index: np.ndarray  # (h, w) uint8
    origin: tuple[int, int]
    colors: tuple[str, ...]

    def rgba(self, shape: tuple[int, int]) -> np.ndarray:
        """(H, W, 4) uint8 of the whole image, as the browser draws it before applying the opacity."""
        lut = np.zeros((256, 4), np.uint8)
        for v, hex_color in enumerate(self.colors, start=1):
            lut[v] = (*(int(hex_color[i:i + 2], 16) for i in (1, 3, 5)), 255)
        out = np.zeros((*shape, 4), np.uint8)
        x0, y0 = self.origin
        out[y0:y0 + self.index.shape[0], x0:x0 + self.index.shape[1]] = lut[self.index]
        return out


def overlay_index(shape: tuple[int, int], masks: Sequence[MaskLike], classes: ClassTable) -> Optional[Overlay]:
    """The overlay of the shown masks in their class colours (None when nothing is shown). Larger
    masks are painted first so an object inside a large region stays visible on top of it.

    Why an index image and not RGBA: a one-channel PNG encodes about 4x faster (the cost is per byte),
    and the browser colours it with a lookup table in a few milliseconds."""
    shown = [(m, _bbox(m.mask)) for m in masks if is_shown(m) and m.mask.shape == tuple(shape)]
    boxes = [(m, b) for m, b in shown if b is not None]
    if not boxes:
        return None
    x0, y0 = min(b[0] for _, b in boxes), min(b[1] for _, b in boxes)
    x1, y1 = max(b[2] for _, b in boxes), max(b[3] for _, b in boxes)
    index = np.zeros((y1 - y0, x1 - x0), np.uint8)
    colors: list[str] = []
    crops = [(m.mask[by0:by1, bx0:bx1], m.label, bx0, by0) for m, (bx0, by0, bx1, by1) in boxes]
    for crop, label, bx0, by0 in sorted(crops, key=lambda c: -int(c[0].sum())):
        color = classes.hex(label)
        if color not in colors:
            colors.append(color)
        h, w = crop.shape
        index[by0 - y0:by0 - y0 + h, bx0 - x0:bx0 - x0 + w][crop] = min(colors.index(color) + 1, 255)
    return Overlay(index, (x0, y0), tuple(colors))


def render_props(image_src: Optional[str], shape: Optional[tuple[int, int]], masks: Sequence[MaskLike],
                 classes: ClassTable, selected: Optional[int] = None, opacity: float = 0.45,
                 active_class: int = 0, points: Sequence[tuple[float, float, bool]] = (),
                 ack: int = 0) -> dict[str, Any]:
    """The canvas widget's value. `image_src` is a URL the browser can fetch (app.canvas.image_src),
    `shape` the image's (H, W); masks of another shape are skipped. `ack` counts the gestures
    answered: a new count makes the browser redraw even when a refused gesture changed nothing else
    (which clears its live brush stroke). JSON-ready."""
    drawn = image_src is not None and shape is not None
    overlay = overlay_index(shape, masks, classes) if drawn else None
    chosen = next((m for m in masks if m.id == selected), None) if drawn else None
    outline = mask_to_polygons(chosen.mask) if chosen is not None and chosen.mask.shape == tuple(shape) else []
    return {
        "image": image_src,
        "height": int(shape[0]) if shape else 0,
        "width": int(shape[1]) if shape else 0,
        "overlay": png_data_url(overlay.index) if overlay else None,
        "overlay_origin": list(overlay.origin) if overlay else [0, 0],
        "overlay_colors": list(overlay.colors) if overlay else [],
        "selected": selected,
        "outline": outline,
        "opacity": float(opacity),
        "classes": [{"name": n, "color": classes.hex(n)} for n in classes.all_names],
        "active_class": int(active_class),
        "points": [[float(x), float(y), bool(p)] for x, y, p in points],
        "keys": sorted(KEY_ACTIONS) + list(CLASS_KEYS),
        "ack": int(ack),
    }


def stroke_mask(stroke: StrokeEvent, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool of the pixels a stroke covers: discs of `radius` joined along the path (pixel
    centres inside the brush are painted, as the browser draws it)."""
    canvas = np.zeros(shape, np.uint8)
    shift = 4  # sub-pixel coordinates for cv2: value * 16
    scale = 1 << shift
    centres = [(int(round((x - 0.5) * scale)), int(round((y - 0.5) * scale))) for x, y in stroke.points]
    radius = int(round(stroke.radius * scale))
    for centre in centres:
        cv2.circle(canvas, centre, radius, 1, -1, cv2.LINE_8, shift)
    thickness = max(1, int(round(2 * stroke.radius)))
    for a, b in zip(centres, centres[1:]):
        cv2.line(canvas, a, b, 1, thickness, cv2.LINE_8, shift)
    return canvas.astype(bool)


def polygon_mask(event: PolygonEvent, shape: tuple[int, int]) -> np.ndarray:
    """The mask of an edited outline, rasterised as pycocotools reads exported polygons. The outline
    sent to the browser is the export's own `mask_to_polygons`, so vertices left alone come back as
    the COCO polygon export would give them."""
    return polygons_to_mask([list(ring) for ring in event.polygons if len(ring) >= 6], shape[0], shape[1])
