"""The page in a real headless browser (Debian chromium via Playwright): the main controls render, a folder
opens, shortcuts drive the review, and no key pressed in any state leaves a component in Gradio's "Error"
state; a reload resumes the folder, image and prompts. Screenshots go to a temp dir only (never docs/).
Skips when /usr/bin/chromium or the playwright package is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SHORTCUT_KEYS = ["a", "r", "d", "Control+z", "Control+y", "Control+Shift+z", "s", "a", "r", "d", "d", "Control+z",
                 "Control+z", "Control+z", "Control+y", "n", "p", "ArrowRight", "ArrowLeft"]
# A component's status tracker says "Error" after a raised exception; an error toast is the other trace.
ERRORS_JS = """() => [...document.querySelectorAll('[data-testid="status-tracker"]')]
    .filter(e => e.innerText.includes('Error')).length + document.querySelectorAll('.toast-body.error').length"""
# Every output's tracker is hidden once its event finished (or shows "Error", which ERRORS_JS counts).
SETTLED_JS = """() => [...document.querySelectorAll('[data-testid="status-tracker"]')]
    .every(e => e.classList.contains('hide') || e.innerText.includes('Error'))"""

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from qmn import QueryMeldNet, get_preset

    from app.model_host import ModelHost
    from app.studio import Studio
    from app.ui import start_in_background

    model = QueryMeldNet(get_preset("tiny", enc_layers=1, dec_layers=1, image_size=128)).eval()
    studio = Studio(ModelHost(model=model), tmp_path_factory.mktemp("ws"), make_examples=True)
    assert len(studio.examples) >= 3
    demo, url = start_in_background(studio)
    yield url
    demo.close()


@pytest.fixture()
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def settle(page, timeout: int = 60_000) -> None:
    page.wait_for_timeout(300)  # let the event start
    page.wait_for_function(SETTLED_JS, timeout=timeout)


def load(page, url: str) -> None:
    page.goto(url, wait_until="load")
    for selector in ("#segment-btn", "#prompts textarea", "#canvas", "#regions", "#status", "#image-list"):
        page.wait_for_selector(selector, timeout=30_000)
    settle(page)


def blur(page) -> None:
    """Shortcuts are ignored while a text field has focus."""
    page.locator("body").click(position={"x": 5, "y": 5})


def open_examples(page) -> None:
    page.fill("#folder textarea", "examples")
    page.click("#open-btn")
    page.locator("#status").get_by_text("Opened examples").wait_for(timeout=30_000)


def test_page_renders_and_drives(url, browser, tmp_path: Path):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    load(page, url)
    for tab in ("Annotate", "Export", "Fine-tune", "Model", "Examples"):
        assert page.get_by_role("tab", name=tab).count() == 1
    open_examples(page)
    status = page.locator("#status")
    first = status.inner_text()
    blur(page)
    page.keyboard.press("n")  # the launch(js=...) shortcut clicks Next
    page.wait_for_function("t => !document.querySelector('#status').innerText.includes(t)",
                           arg=first.split("(")[0].strip(), timeout=30_000)
    page.fill("#prompts textarea", "object, background")
    page.fill("#threshold input[type='number']", "0.0")  # a random-weight model scores low
    page.keyboard.press("Enter")
    page.click("#segment-btn")
    status.get_by_text("state: proposed").wait_for(timeout=60_000)
    assert "No masks yet" not in page.locator("#legend").inner_text()
    blur(page)
    page.keyboard.press("a")  # accepts the outlined best proposal; the image list follows
    status.get_by_text("state: in review").wait_for(timeout=30_000)
    page.wait_for_function("() => document.querySelector('#image-list').innerText.includes('in review')",
                           timeout=30_000)
    shot = tmp_path / "screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_no_shortcut_in_any_state_leaves_an_error(url, browser):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    load(page, url)

    def press_all(where: str) -> None:
        for key in SHORTCUT_KEYS:
            blur(page)
            page.keyboard.press(key)
            settle(page)
            assert page.evaluate(ERRORS_JS) == 0, f"{key} {where} left an error on the page"

    press_all("with nothing open")
    assert "no folder is open" in page.locator("#status").inner_text()  # the refusal is the status message
    open_examples(page)
    press_all("on an image without prompts")
    page.fill("#prompts textarea", "object, background")
    page.fill("#threshold input[type='number']", "0.0")
    page.keyboard.press("Enter")
    blur(page)
    page.keyboard.press("s")
    page.locator("#status").get_by_text("proposed").wait_for(timeout=60_000)
    settle(page)
    press_all("with proposals")
    page.get_by_role("tab", name="Fine-tune").click()
    for _ in range(2):  # nothing to roll back to: a message, not an error, however often
        page.click("#ft-rollback")
        settle(page)
        assert page.evaluate(ERRORS_JS) == 0
    assert "nothing to roll back to" in page.locator("#ft-md").inner_text()


def test_reload_resumes_folder_image_and_prompts(url, browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    load(page, url)
    open_examples(page)
    blur(page)
    page.keyboard.press("n")
    settle(page)
    name = page.locator("#status strong").first.inner_text()
    page.fill("#prompts textarea", "cat, dog")
    blur(page)
    settle(page)
    page.wait_for_timeout(1000)  # the browser state is written by the change events
    page.reload(wait_until="load")
    page.locator("#status").get_by_text(f"Resumed {name}").wait_for(timeout=30_000)
    page.wait_for_function("() => document.querySelector('#prompts textarea').value === 'cat, dog'", timeout=30_000)
    assert page.evaluate(ERRORS_JS) == 0
    context.close()
