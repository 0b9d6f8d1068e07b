"""Click -> event -> rendered overlay round trip of the annotation canvas on a 1280x1024 photo, in
headless Chromium; prints JSON.

The page measures each round trip itself (app/canvas.js: from the gesture leaving the page to the
new overlay decoded and drawn), so Playwright's own overhead is not counted. "widget": the canvas
demo (app/canvas_demo.py), where a click adds a disc mask: the widget's cost (event, renderer, PNG
overlay, transfer, decode, draw) without the model's. "app_with_model" (--app): the Annotate tab
with the bundled model and its default click fill, used as an annotator does: per object one click
on it ("first_click": the one-click -> mask time), two corrections near it ("refine_click": GrabCut
re-solves from all clicks and the previous mask), then `a` to accept it, and the next object.
The renderer alone is timed too.

    python bench/canvas_latency.py [--clicks 20] [--objects 8] [--photo PATH] [--app]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SHARED_PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "fruitsnuts" / "images"
ROOT = "#qmn-canvas .qmn-canvas"


def load_photo(path: str | None) -> tuple[np.ndarray, str]:
    """A real photo resized to 1280x1024 (fruitsnuts when present), else the demo's synthetic one."""
    from app.canvas_demo import sample_photo

    candidates = [Path(path)] if path else sorted(SHARED_PHOTO.glob("*.jpg"))[:1]
    for p in candidates:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is not None:
            return cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (1280, 1024), interpolation=cv2.INTER_AREA), str(p)
    return sample_photo(), "synthetic"


def time_renderer(photo: np.ndarray, masks: int = 20, repeats: int = 5) -> float:
    """Median ms of render_props with `masks` disc masks and one selected (outline traced)."""
    from app.canvas_demo import CLASSES, DemoState, disc
    from app.canvas_view import render_props

    state = DemoState(photo)
    for i in range(masks):
        state.add(disc(photo.shape[:2], 64 + 60 * i, 100 + 40 * (i % 5), 25))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        render_props("u", photo.shape[:2], state.regions, CLASSES, state.selected)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


class CanvasPage:
    """The canvas at `url` in headless Chromium, once its photo is shown: gestures that wait for their answer."""

    def __init__(self, playwright: Any, url: str, setup: Callable[[Any], None]) -> None:
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                  args=["--no-sandbox", "--disable-gpu"])
        self.page = self.browser.new_page(viewport={"width": 1600, "height": 1100})
        self.page.goto(url, wait_until="load")
        setup(self.page)
        self.root = self.page.wait_for_selector(".qmn-canvas", timeout=60_000)
        self.page.wait_for_function("r => r.qmn && r.qmn.img && r.qmn.shown && r.qmn.shown.image", arg=self.root,
                                    timeout=60_000)
        self.page.wait_for_timeout(2000)  # let the refreshes that follow opening a folder land before timing
        box = self.page.locator(".qmn-canvas canvas").bounding_box()
        w, h = self.page.evaluate("r => [r.qmn.shown.width, r.qmn.shown.height]", self.root)
        fit = min(box["width"] / w, box["height"] / h)  # the photo is fitted and centred
        self.origin = (box["x"] + (box["width"] - w * fit) / 2, box["y"] + (box["height"] - h * fit) / 2)
        self.size = (w * fit, h * fit)

    def _answered(self, gesture: Callable[[], None]) -> None:
        done = self.page.evaluate("r => r.qmn.latencies.length", self.root)
        gesture()
        self.page.wait_for_function("([r, n]) => r.qmn.latencies.length > n", arg=[self.root, done], timeout=120_000)

    def click(self, fx: float, fy: float) -> None:
        """Click at a fraction (fx, fy) of the photo."""
        self._answered(lambda: self.page.mouse.click(self.origin[0] + self.size[0] * fx,
                                                     self.origin[1] + self.size[1] * fy))

    def press(self, key: str) -> None:
        self._answered(lambda: (self.root.focus(), self.page.keyboard.press(key)))

    def latencies(self) -> list[float]:
        return self.page.evaluate("r => r.qmn.latencies", self.root)

    def close(self) -> None:
        self.browser.close()


def round_trips(url: str, clicks: int, setup: Callable[[Any], None] = lambda page: None) -> list[float]:
    """Click `clicks` times across the canvas at `url`; the page's own round-trip times (ms)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        canvas = CanvasPage(p, url, setup)
        for i in range(clicks):
            canvas.click(0.2 + 0.6 * ((i * 7) % 10) / 10, 0.2 + 0.6 * ((i * 3) % 10) / 10)
        latencies = canvas.latencies()
        canvas.close()
    return latencies


def object_round_trips(url: str, objects: int, setup: Callable[[Any], None]) -> dict[str, list[float]]:
    """Per object: a click on it, two corrections 2% of the photo away, `a` (accept) -> round trips by kind (ms)."""
    from playwright.sync_api import sync_playwright

    kinds: list[str] = []
    with sync_playwright() as p:
        canvas = CanvasPage(p, url, setup)
        for k in range(objects):
            fx, fy = 0.15 + 0.7 * ((k * 3) % 8) / 8, 0.2 + 0.6 * ((k * 5) % 8) / 8
            for dx, dy, kind in ((0, 0, "first_click"), (0.02, 0.01, "refine_click"), (-0.015, 0.02, "refine_click")):
                canvas.click(fx + dx, fy + dy)
                kinds.append(kind)
            canvas.press("a")
            kinds.append("accept")
        latencies = canvas.latencies()
        canvas.close()
    by_kind: dict[str, list[float]] = {}
    for kind, ms in zip(kinds, latencies):
        by_kind.setdefault(kind, []).append(ms)
    return by_kind


def demo_round_trips(photo: np.ndarray, clicks: int) -> list[float]:
    """The canvas demo: a click adds a disc (the widget's own cost)."""
    from app.canvas_demo import demo_blocks
    from app.ui import free_port

    demo = demo_blocks(photo)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            run_history=False)
    try:
        return round_trips(url, clicks)
    finally:
        demo.close()


def app_round_trips(photo: np.ndarray, objects: int, workspace: Path) -> dict[str, list[float]]:
    """The real app with the bundled model and its default click fill (2 threads), per object (object_round_trips)."""
    import torch

    from app.model_host import DEFAULT_CHECKPOINT, ModelHost
    from app.studio import Studio
    from app.ui import start_in_background

    torch.set_num_threads(2)
    folder = workspace / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "photo.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    demo, url = start_in_background(Studio(ModelHost(DEFAULT_CHECKPOINT, "cpu"), workspace, make_examples=False))

    def open_folder(page: Any) -> None:
        page.fill("#folder textarea", "photos")
        page.click("#open-btn")
        page.fill("#prompts textarea", "object")

    try:
        return object_round_trips(url, objects, open_folder)
    finally:
        demo.close()


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"gestures": len(ordered), "round_trip_ms_median": round(statistics.median(ordered), 1),
            "round_trip_ms_p90": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
            "round_trip_ms_max": round(ordered[-1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--objects", type=int, default=8, help="objects made in the app (--app): 3 clicks + accept each")
    parser.add_argument("--photo", default=None, help="image file (default: a fruitsnuts photo, else synthetic)")
    parser.add_argument("--app", action="store_true", help="also the real app with the bundled model in the loop")
    parser.add_argument("--out", type=Path, help="also write the JSON here (stdout carries the servers' own lines too)")
    args = parser.parse_args()
    photo, source = load_photo(args.photo)
    result = {"photo": source, "size": [int(photo.shape[1]), int(photo.shape[0])],
              "omp_threads": int(os.environ["OMP_NUM_THREADS"]), "renderer_ms_20_masks": round(time_renderer(photo), 1)}
    if not Path(CHROMIUM).exists():
        result["browser"] = f"skipped: {CHROMIUM} not installed"
    else:
        result["widget"] = summary(demo_round_trips(photo, args.clicks))
        if args.app:
            with tempfile.TemporaryDirectory() as ws:
                by_kind = app_round_trips(photo, args.objects, Path(ws))
                result["app_with_model"] = {"objects": args.objects, "torch_threads": 2,
                                            **{kind: summary(ms) for kind, ms in by_kind.items()}}
    print(json.dumps(result, indent=2))
    if args.out:
        from qmn.io_utils import atomic_write_json

        atomic_write_json(args.out, result, indent=2)


if __name__ == "__main__":
    main()
