"""The page in a real headless browser (Debian chromium via Playwright): the main controls render, a
folder opens, the keyboard shortcut moves to the next image, Segment draws masks. Saves
docs/screenshot.png for the README. Skips when /usr/bin/chromium is absent."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from qmn import QueryMeldNet, get_preset

    from app.handlers import Studio
    from app.model_host import ModelHost
    from app.ui import start_in_background

    model = QueryMeldNet(get_preset("tiny", enc_layers=1, dec_layers=1, image_size=128)).eval()
    studio = Studio(ModelHost(model=model), tmp_path_factory.mktemp("ws"), make_examples=True)
    assert len(studio.examples) >= 3
    demo, url = start_in_background(studio)
    yield url
    demo.close()


def test_page_renders_and_drives(url, tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(url, wait_until="load")
        for selector in ("#segment-btn", "#prompts textarea", "#viewer", "#regions", "#undo-btn", "#accept-btn",
                         "#image-list", "#task"):
            page.wait_for_selector(selector, timeout=30_000)
        for tab in ("Annotate", "Export", "Fine-tune", "Model", "Examples"):
            assert page.get_by_role("tab", name=tab).count() == 1
        page.fill("#folder textarea", "examples")
        page.click("#open-btn")
        status = page.locator("#status")
        status.get_by_text("state: new").wait_for(timeout=30_000)
        first = status.inner_text()
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("n")  # the launch(js=...) shortcut clicks Next
        page.wait_for_function("t => !document.querySelector('#status').innerText.includes(t)",
                               arg=first.split("(")[0].strip(), timeout=30_000)
        page.fill("#prompts textarea", "object, background")
        page.fill("#threshold input[type='number']", "0.025")  # a random-weight model scores low
        page.keyboard.press("Enter")
        page.click("#segment-btn")
        status.get_by_text("state: predicted").wait_for(timeout=60_000)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shot = tmp_path / "screenshot.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    shutil.copyfile(shot, SCREENSHOT)
