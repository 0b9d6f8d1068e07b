"""The annotation canvas in a real headless browser (Debian chromium via Playwright) on a 1280x1024
photo: zoom 4x with the wheel, then click, shift-click, drag a box, paint, press keys, pan, select and
drag a polygon vertex, and check that Python received each gesture as the right typed event with
image coordinates within 1 px; a class chip's right-click shows that class alone. Expected coordinates come from the page geometry alone (the photo is
fitted and centred, the wheel zooms about the cursor), not from the widget's own transform.
Screenshots go to pytest's tmp dir. Skips when /usr/bin/chromium is absent."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
W, H = 1280, 1024
ROOT = "#qmn-canvas .qmn-canvas"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def url():
    from app.canvas_demo import demo_blocks
    from app.ui import free_port

    demo = demo_blocks(height=640)
    _, local_url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                  quiet=True, run_history=False)
    yield local_url
    demo.close()


class Canvas:
    """Page-side helpers: image <-> client coordinates from the canvas box and the known zoom."""

    def __init__(self, page):
        self.page = page
        box = page.locator(f"{ROOT} canvas").bounding_box()
        self.left, self.top = box["x"], box["y"]
        self.fit = min(box["width"] / W, box["height"] / H)
        # fitted and centred: image (x, y) is at client origin + offset + (x, y) * fit
        self.anchor_client = None
        self.anchor_image = None
        self.offset = ((box["width"] - W * self.fit) / 2, (box["height"] - H * self.fit) / 2)
        self.scale = self.fit

    def client_at_fit(self, x: float, y: float) -> tuple[float, float]:
        return self.left + self.offset[0] + x * self.fit, self.top + self.offset[1] + y * self.fit

    def client(self, x: float, y: float) -> tuple[float, float]:
        """Where image point (x, y) is on screen after zooming about `anchor_client`."""
        cx, cy = self.anchor_client
        ax, ay = self.anchor_image
        return cx + (x - ax) * self.scale, cy + (y - ay) * self.scale

    def events(self) -> list[dict]:
        return json.loads(self.page.locator("#canvas-log textarea").input_value() or "[]")

    def wait_events(self, n: int) -> list[dict]:
        self.page.wait_for_function(
            "n => JSON.parse(document.querySelector('#canvas-log textarea').value || '[]').length >= n",
            arg=n, timeout=30_000)
        return self.events()

    def settle(self, n: int) -> None:
        """Wait until the view Python sent after its n-th event is drawn (its `ack`)."""
        self.page.wait_for_function(f"n => (document.querySelector('{ROOT}').qmn.shown || {{}}).ack >= n",
                                    arg=n, timeout=30_000)


def near(event: dict, x: float, y: float) -> bool:
    return abs(event["x"] - x) <= 1 and abs(event["y"] - y) <= 1


def test_canvas_gestures_reach_python_in_image_pixels(url, tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(url, wait_until="load")
        page.wait_for_function(f"() => {{ const r = document.querySelector('{ROOT}'); return r && r.qmn && r.qmn.img }}",
                               timeout=30_000)
        page.evaluate("() => document.fonts.ready.then(() => true)")  # late web fonts shift the layout
        c = Canvas(page)
        mouse, keyboard = page.mouse, page.keyboard

        # zoom to 4x about the disc at image (448, 320): the wheel keeps the point under the cursor fixed
        c.anchor_image = (448.0, 320.0)
        c.anchor_client = c.client_at_fit(*c.anchor_image)
        mouse.move(*c.anchor_client)
        mouse.wheel(0, -100 * math.log(4) / math.log(1.25))  # 1.25x per 100 px of wheel delta
        page.wait_for_function(f"() => Number(document.querySelector('{ROOT}').dataset.zoom) > 3.9", timeout=10_000)
        zoom = float(page.locator(ROOT).get_attribute("data-zoom"))
        assert zoom == pytest.approx(4.0, abs=0.01)
        c.scale = c.fit * zoom
        page.screenshot(path=str(tmp_path / "zoomed.png"))

        # click = positive point, shift-click = negative point, on a 30 px object
        mouse.click(*c.client(453.5, 327.5))
        events = c.wait_events(1)
        assert events[0]["type"] == "PointEvent" and events[0]["positive"] and near(events[0], 453.5, 327.5), events[0]
        keyboard.down("Shift")
        mouse.click(*c.client(441.25, 314.75))
        keyboard.up("Shift")
        events = c.wait_events(2)
        assert events[1]["type"] == "PointEvent" and not events[1]["positive"] and near(events[1], 441.25, 314.75)

        # drag = box
        mouse.move(*c.client(400, 280))
        mouse.down()
        for t in (0.25, 0.5, 0.75, 1.0):
            mouse.move(*c.client(400 + 100 * t, 280 + 80 * t))
        mouse.up()
        box = c.wait_events(3)[2]
        assert box["type"] == "BoxEvent"
        assert all(abs(a - b) <= 1 for a, b in zip(box["box"], (400, 280, 500, 360))), box

        # number key relabels the selected mask (the box) with class 2
        keyboard.press("2")
        key = c.wait_events(4)[3]
        assert key == {"type": "KeyEvent", "key": "2", "action": "class", "class_index": 1}

        # brush: B, one size step up with ], a stroke; then the eraser
        keyboard.press("b")
        keyboard.press("]")
        mouse.move(*c.client(420, 340))
        mouse.down()
        for t in (0.2, 0.4, 0.6, 0.8, 1.0):
            mouse.move(*c.client(420 + 50 * t, 340 + 5 * t))
        mouse.up()
        stroke = c.wait_events(5)[4]
        assert stroke["type"] == "StrokeEvent" and not stroke["erase"]
        assert stroke["radius"] == pytest.approx(10.0)
        assert near({"x": stroke["points"][0][0], "y": stroke["points"][0][1]}, 420, 340)
        assert near({"x": stroke["points"][-1][0], "y": stroke["points"][-1][1]}, 470, 345)
        keyboard.press("e")
        mouse.move(*c.client(430, 300))
        mouse.down()
        mouse.move(*c.client(440, 300))
        mouse.up()
        erase = c.wait_events(6)[5]
        assert erase["type"] == "StrokeEvent" and erase["erase"]

        # accept / undo / next keys are sent as events
        for key_name, action in (("a", "accept"), ("u", "undo"), ("n", "next")):
            keyboard.press(key_name)
        keys = c.wait_events(9)[6:9]
        assert [k["action"] for k in keys] == ["accept", "undo", "next"]

        # pan with space held: the zoom stays, the image moves with the mouse
        keyboard.press("c")  # back to point mode
        start = c.client(460, 330)
        keyboard.down(" ")
        mouse.move(*start)
        mouse.down()
        mouse.move(start[0] + 60, start[1] + 40, steps=4)
        mouse.up()
        keyboard.up(" ")
        c.anchor_client = (c.anchor_client[0] + 60, c.anchor_client[1] + 40)
        assert float(page.locator(ROOT).get_attribute("data-zoom")) == pytest.approx(zoom)
        mouse.click(*c.client(448.5, 320.5))
        events = c.wait_events(10)
        assert events[9]["type"] == "PointEvent" and near(events[9], 448.5, 320.5), events[9]

        # middle-button drag pans too
        x, y = c.client(450, 330)
        mouse.move(x, y)
        mouse.down(button="middle")
        mouse.move(x, y - 30, steps=3)
        mouse.up(button="middle")
        c.anchor_client = (c.anchor_client[0], c.anchor_client[1] - 30)

        # select mode: a click on a mask selects it
        keyboard.press("v")
        mouse.click(*c.client(449, 321))
        events = c.wait_events(11)
        assert events[10]["type"] == "SelectEvent" and near(events[10], 449, 321)
        c.settle(11)

        # vertex editing: drag a vertex of the selected mask's outline 12 image px to the right
        keyboard.press("g")
        outline = page.evaluate(f"() => document.querySelector('{ROOT}').qmn.view.outline")
        assert outline, "the selected mask has an outline"
        vx, vy = outline[0][0], outline[0][1]
        mouse.move(*c.client(vx, vy))
        mouse.down()
        mouse.move(*c.client(vx + 6, vy), steps=2)
        mouse.move(*c.client(vx + 12, vy), steps=2)
        mouse.up()
        polygon = c.wait_events(12)[11]
        assert polygon["type"] == "PolygonEvent"
        moved = polygon["polygons"][0]
        assert abs(moved[0] - (vx + 12)) <= 1 and abs(moved[1] - vy) <= 1
        assert moved[2:] == pytest.approx(outline[0][2:])
        c.settle(12)
        page.screenshot(path=str(tmp_path / "edited.png"))

        # right-click on a class chip shows only that class; again shows all
        alpha_js = f"""([x, y]) => {{ const s = document.querySelector('{ROOT}').qmn, [ox, oy] = s.shown.overlay_origin;
            return s.overlay.canvas.getContext('2d').getImageData(x - ox, y - oy, 1, 1).data[3]; }}"""
        inside_box = [490, 350]  # the box (class 2) away from the discs (class 1)
        assert page.evaluate(alpha_js, inside_box) == 255
        chip = page.locator(f"{ROOT} .qmn-chip").nth(0)
        chip.click(button="right")
        assert "solo" in chip.get_attribute("class") and page.evaluate(alpha_js, inside_box) == 0
        chip.click(button="right")
        assert page.evaluate(alpha_js, inside_box) == 255
        browser.close()
    assert (tmp_path / "zoomed.png").stat().st_size > 10_000
