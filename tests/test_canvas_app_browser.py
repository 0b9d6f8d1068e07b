"""The canvas inside the real app (headless chromium via Playwright): on an opened folder, a box drag fills a mask
(GrabCut, deterministic), a brush stroke paints into it, number keys relabel it, u undoes, a click prompts the
click fills a mask and a shift-click refines it, d marks the image done, n opens the next image, and the Export tab's
zip holds exactly the done image (read with pycocotools); each step checked in the status line, the mask table and the canvas' own view.
Screenshots go to a temp dir. Skips when /usr/bin/chromium or playwright is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = "#canvas .qmn-canvas"
ERRORS_JS = """() => [...document.querySelectorAll('[data-testid="status-tracker"]')]
    .filter(e => e.innerText.includes('Error')).length + document.querySelectorAll('.toast-body.error').length"""

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from qmn import QueryMeldNet, get_preset

    from app.model_host import ModelHost
    from app.studio import Studio
    from app.ui import start_in_background

    model = QueryMeldNet(get_preset("tiny", enc_layers=1, dec_layers=1, image_size=128)).eval()
    studio = Studio(ModelHost(model=model), tmp_path_factory.mktemp("ws"), make_examples=True)
    demo, url = start_in_background(studio)
    yield url
    demo.close()


def wait_status(page, text: str) -> str:
    page.locator("#status").get_by_text(text).first.wait_for(timeout=60_000)
    return page.locator("#status").inner_text()


def canvas_view(page) -> dict:
    return page.evaluate(f"() => document.querySelector('{ROOT}').qmn.shown")


def test_canvas_drives_the_annotate_tab(url, tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.goto(url, wait_until="load")
        page.fill("#folder textarea", "examples")
        page.click("#open-btn")
        wait_status(page, "state:")
        page.wait_for_function(f"() => {{ const s = document.querySelector('{ROOT}').qmn; return s.img && s.shown && s.shown.image }}",
                               timeout=60_000)
        page.evaluate("() => document.fonts.ready.then(() => true)")
        page.fill("#prompts textarea", "object, background")
        page.locator("#prompts textarea").blur()
        page.wait_for_function(f"() => (document.querySelector('{ROOT}').qmn.shown.classes || []).length === 2",
                               timeout=30_000)
        page.get_by_label("grabcut").check()  # boxes fill with GrabCut: deterministic, no model
        box = page.locator(f"{ROOT} canvas").bounding_box()
        view = canvas_view(page)
        fit = min(box["width"] / view["width"], box["height"] / view["height"])
        left = box["x"] + (box["width"] - view["width"] * fit) / 2
        top = box["y"] + (box["height"] - view["height"] * fit) / 2

        def at(x: float, y: float) -> tuple[float, float]:
            return left + x * fit, top + y * fit

        w, h = view["width"], view["height"]
        mouse = page.mouse
        mouse.move(*at(0.3 * w, 0.3 * h))
        mouse.down()
        mouse.move(*at(0.7 * w, 0.7 * h), steps=5)
        mouse.up()
        wait_status(page, "from the box")
        assert canvas_view(page)["overlay"] and canvas_view(page)["outline"]
        page.keyboard.press("b")
        mouse.move(*at(0.1 * w, 0.5 * h))
        mouse.down()
        mouse.move(*at(0.2 * w, 0.5 * h), steps=4)
        mouse.up()
        wait_status(page, "Painted into")
        page.keyboard.press("2")
        wait_status(page, "is now 'background'")
        page.keyboard.press("u")
        wait_status(page, "Undone.")
        page.keyboard.press("c")
        mouse.click(*at(0.5 * w, 0.5 * h))
        status = wait_status(page, "from 1 click")  # GrabCut seeded by the click (the app's default fill)
        assert "undo" in status
        page.keyboard.down("Shift")
        mouse.click(*at(0.9 * w, 0.9 * h))  # a negative click refines the same object
        page.keyboard.up("Shift")
        wait_status(page, "from 2 clicks")
        assert [p[2] for p in canvas_view(page)["points"]] == [True, False]
        page.screenshot(path=str(tmp_path / "app_canvas.png"), full_page=True)
        page.keyboard.press("d")
        first = wait_status(page, "masks kept").split("(")[0]  # mark_done's own reply, not the "k of n done" count
        page.keyboard.press("n")
        page.wait_for_function("t => !document.querySelector('#status').innerText.startsWith(t)", arg=first,
                               timeout=60_000)
        assert page.evaluate(ERRORS_JS) == 0
        coco = export_through_the_page(page, tmp_path)
        assert len(coco.imgs) == 1, "only the image marked done is exported"
        names = {c["name"] for c in coco.cats.values()}
        assert coco.anns and {coco.cats[a["category_id"]]["name"] for a in coco.anns.values()} <= names
        assert all(coco.annToMask(a).any() for a in coco.anns.values())
        browser.close()


def export_through_the_page(page, tmp_path: Path):
    """Export tab -> Export -> download the zip the page links -> its instances.json read by pycocotools."""
    import zipfile

    from pycocotools.coco import COCO

    page.get_by_role("tab", name="Export").click()
    page.click("#export-btn")
    link = page.locator("#export-file a[href]").first
    link.wait_for(timeout=60_000)
    body = page.request.get(link.get_attribute("href")).body()
    (tmp_path / "export.zip").write_bytes(body)
    with zipfile.ZipFile(tmp_path / "export.zip") as zf:
        name = next(n for n in zf.namelist() if n.endswith("instances.json"))
        zf.extract(name, tmp_path / "export")
    return COCO(str(tmp_path / "export" / name))
