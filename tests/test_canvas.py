"""The canvas' Python side without a browser: gesture parsing, class colours, the widget's props,
brush strokes and the polygon round trip (mask -> outline -> mask) against the COCO export's."""
from __future__ import annotations

import base64
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from app.canvas_events import (BoxEvent, KeyEvent, PointEvent, PolygonEvent, SelectEvent, StrokeEvent, key_event,
                               parse_event)
from app.canvas_view import ClassTable, overlay_index, polygon_mask, render_props, stroke_mask
from qmn.data.mask_codec import mask_iou, mask_to_polygons, polygons_to_mask


@dataclass
class M:
    id: int
    label: str
    mask: np.ndarray
    visible: bool = True


def rect(shape, x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_parse_every_gesture():
    assert parse_event({"type": "point", "x": 10.5, "y": 20.25, "positive": False}) == PointEvent(10.5, 20.25, False)
    assert PointEvent(10.9, 20.1).pixel == (10, 20)
    assert parse_event({"type": "box", "box": [50, 40, 10, 5]}) == BoxEvent((10.0, 5.0, 50.0, 40.0))
    stroke = parse_event({"type": "stroke", "points": [[1, 2], [3, 4]], "radius": 5, "erase": True})
    assert stroke == StrokeEvent(((1.0, 2.0), (3.0, 4.0)), 5.0, True)
    assert parse_event({"type": "select", "x": 3, "y": 4}) == SelectEvent(3.0, 4.0)
    assert parse_event({"type": "key", "key": "3"}) == KeyEvent("3", "class", 2)
    assert parse_event({"type": "key", "key": "ctrl+z"}) == KeyEvent("ctrl+z", "undo")
    assert parse_event({"type": "polygon", "id": 7, "polygons": [[0, 0, 4, 0, 4, 4]]}) == \
        PolygonEvent(7, ((0.0, 0.0, 4.0, 0.0, 4.0, 4.0),))
    assert parse_event(None) is None and parse_event({}) is None


@pytest.mark.parametrize("payload, message", [
    ({"type": "lasso"}, "unknown type"),
    ({"type": "point", "x": "1", "y": 2}, "'x'"),
    ({"type": "point", "x": float("nan"), "y": 2}, "finite"),
    ({"type": "box", "box": [1, 2, 3]}, "x0, y0, x1, y1"),
    ({"type": "stroke", "points": [], "radius": 3}, "at least one point"),
    ({"type": "stroke", "points": [[1, 2, 3]], "radius": 3}, "pairs"),
    ({"type": "stroke", "points": [[1, 2]], "radius": 0}, "radius"),
    ({"type": "key", "key": "q"}, "no action"),
    ({"type": "polygon", "id": 1, "polygons": [[1, 2, 3]]}, "odd"),
])
def test_malformed_gestures_say_what_is_wrong(payload, message):
    with pytest.raises(ValueError, match=message):
        parse_event(payload)


def test_key_table_covers_accept_reject_undo_next():
    assert {key_event(k).action for k in ("a", "r", "u", "n", "ctrl+z", "p")} == \
        {"accept", "reject", "undo", "next", "previous"}


def test_class_colours_are_fixed_per_name():
    table = ClassTable(("cell", "nucleus"))
    assert table.color("cell") != table.color("nucleus")
    assert ClassTable(("cell", "nucleus", "debris")).color("nucleus") == table.color("nucleus")  # same folder order
    assert table.color("other") == ClassTable(("x",)).color("other")  # outside the ontology: hashed, stable
    assert table.hex("cell").startswith("#") and len(table.hex("cell")) == 7
    assert table.name_at(1) == "nucleus" and table.name_at(5) is None and table.name_at(None) is None
    grown = table.with_name("debris")
    assert grown.all_names == ("cell", "nucleus", "debris") and table.with_name("cell") is table
    assert grown.color("debris") == table.color("debris") and grown.name_at(2) == "debris"  # extras keep their hash colour


def test_props_overlay_colours_outline_and_hidden_masks():
    shape = (40, 60)
    table = ClassTable(("cell", "nucleus"))
    big, small = M(1, "cell", rect(shape, 0, 0, 40, 30)), M(2, "nucleus", rect(shape, 10, 10, 20, 20))
    hidden = M(3, "nucleus", rect(shape, 50, 30, 60, 40), visible=False)
    props = render_props("gradio_api/file=/x.png", shape, [small, big, hidden], table, selected=2, opacity=0.3,
                         active_class=1, points=[(5.5, 6.5, True)])
    assert props["width"] == 60 and props["height"] == 40 and props["opacity"] == 0.3 and props["selected"] == 2
    assert props["classes"] == [{"name": "cell", "color": table.hex("cell")}, {"name": "nucleus", "color": table.hex("nucleus")}]
    assert props["outline"] == mask_to_polygons(small.mask) and props["points"] == [[5.5, 6.5, True]]
    assert "a" in props["keys"] and "1" in props["keys"]
    png = base64.b64decode(props["overlay"].split(",", 1)[1])
    overlay = overlay_index(shape, [small, big, hidden], table)
    assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED), overlay.index)
    assert props["overlay_origin"] == [0, 0] and props["overlay_colors"] == list(overlay.colors)
    rgba = overlay.rgba(shape)
    assert tuple(rgba[15, 15]) == (*table.color("nucleus"), 255)  # the smaller mask is painted on top
    assert tuple(rgba[2, 2]) == (*table.color("cell"), 255)
    assert rgba[35, 55, 3] == 0  # hidden
    only_small = overlay_index(shape, [small], table)
    assert only_small.origin == (10, 10) and only_small.index.shape == (10, 10)  # cropped to the masks
    empty = render_props(None, None, [], table)
    assert empty["image"] is None and empty["overlay"] is None and empty["outline"] == []


def test_stroke_covers_the_path_with_the_radius():
    mask = stroke_mask(StrokeEvent(((10.5, 10.5), (30.5, 10.5)), 3.0), (24, 40))
    assert mask[10, 10] and mask[10, 20] and mask[10, 30] and mask[13, 20] and mask[7, 20]
    assert not mask[15, 20] and not mask[10, 35] and not mask[10, 5]
    dot = stroke_mask(StrokeEvent(((5.5, 5.5),), 1.0), (12, 12))
    assert dot[5, 5] and dot.sum() <= 9


def shapes() -> dict[str, np.ndarray]:
    shape = (64, 80)
    ring = np.zeros(shape, np.uint8)
    cv2.circle(ring, (40, 32), 20, 1, -1)
    cv2.circle(ring, (40, 32), 8, 0, -1)  # a hole
    parts = rect(shape, 2, 2, 12, 9) | rect(shape, 60, 40, 75, 60)
    diagonal = np.tri(*shape, k=-10, dtype=bool)
    return {"ring with hole": ring.astype(bool), "two parts": parts, "diagonal": diagonal,
            "one pixel": rect(shape, 5, 5, 6, 6)}


@pytest.mark.parametrize("name", list(shapes()))
def test_polygon_round_trip_matches_the_coco_export(name):
    """mask -> the outline the browser edits -> PolygonEvent -> mask equals what the COCO polygon
    export reads back (the same rasterisation), so an untouched outline changes nothing beyond it."""
    mask = shapes()[name]
    props = render_props("u", mask.shape, [M(1, "cell", mask)], ClassTable(("cell",)), selected=1)
    event = parse_event({"type": "polygon", "id": 1, "polygons": props["outline"]})
    back = polygon_mask(event, mask.shape)
    exported = polygons_to_mask(mask_to_polygons(mask), *mask.shape)
    assert np.array_equal(back, exported)
    assert mask_iou(back, mask) >= 0.99
    if name != "diagonal":
        assert np.array_equal(back, mask)


def test_moving_a_vertex_grows_the_mask():
    shape = (40, 40)
    mask = rect(shape, 10, 10, 20, 20)
    ring = list(mask_to_polygons(mask)[0])
    xs = ring[0::2]
    right = [i for i, x in enumerate(xs) if x == max(xs)]
    for i in right:  # drag the right edge's two vertices 5 px further right
        ring[2 * i] += 5
    grown = polygon_mask(PolygonEvent(1, (tuple(ring),)), shape)
    assert np.array_equal(grown, rect(shape, 10, 10, 25, 20))


def test_photo_url_is_by_content_and_survives_a_cleaned_cache(tmp_path, monkeypatch):
    """The photo is served under a hash of its content: the same array (remembered, not re-hashed) and an equal copy
    get one URL, another photo another; a served file removed by a cache clean-up is written again."""
    import hashlib

    import gradio as gr

    import app.canvas
    from app.canvas import image_src

    hashed, sha1 = [], hashlib.sha1
    monkeypatch.setattr(app.canvas.hashlib, "sha1", lambda data: hashed.append(1) or sha1(data))
    monkeypatch.setattr(gr.utils, "get_upload_folder", lambda: str(tmp_path))
    photo = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    url = image_src(photo)
    served = tmp_path / "qmn_canvas" / url.rsplit("/", 1)[1]
    assert url.startswith("gradio_api/file=") and served.is_file()
    assert cv2.imread(str(served))[..., ::-1].tolist() == photo.tolist()
    assert image_src(photo) == url and len(hashed) == 1
    assert image_src(photo.copy()) == url and len(hashed) == 2
    other = photo.copy()
    other[0, 0] ^= 1
    assert image_src(other) != url
    served.unlink()
    assert image_src(photo) == url and served.is_file()
