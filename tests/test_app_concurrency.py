"""Concurrency (issue 7), the small version of bench/app_load.py: 3 gradio_client sessions x 3 /segment calls
in parallel threads against one in-process app on 127.0.0.1. No errors, and no state crossing: every answer
a session gets is about its own image, and each session's stored state still holds its own image after.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file

from app.studio import Studio
from app.model_host import ModelHost
from app.ui import start_in_background

SESSIONS = 3
REQUESTS = 3


@pytest.fixture(scope="module")
def server(micro_model, tmp_path_factory):
    """The app on 127.0.0.1 and a free port, serving the micro model (one torch thread: the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("workspace")
    demo, url = start_in_background(Studio(ModelHost(model=micro_model), root, make_examples=False))
    yield url, root
    demo.close()
    torch.set_num_threads(threads)


def session_image(index: int) -> np.ndarray:
    """A distinct (48, 64, 3) RGB image per session, so each gets its own stored name."""
    image = np.full((48, 64, 3), 20 + 60 * index, np.uint8)
    cv2.rectangle(image, (10 + 5 * index, 8), (40, 30 + 4 * index), (250, 200 - 40 * index, 30), -1)
    return image


def stored_name(image: np.ndarray) -> str:
    """The name the app stores an image sent to /segment under (app.handlers: sha1 of the RGB pixels)."""
    return f"image_{hashlib.sha1(image.tobytes()).hexdigest()[:12]}.png"


def run_session(url: str, image_path: Path) -> dict:
    """REQUESTS /segment calls on one session, then /undo to read that session's state back."""
    client = Client(url, verbose=False)
    seen = [client.predict(handle_file(str(image_path)), "block, background", "instance", 0.0, "", "",
                           api_name="/segment")[-1]["image"] for _ in range(REQUESTS)]
    status = client.predict(api_name="/undo")[3]  # (overlay, table, legend, status, selected): gr.State is not sent
    return {"seen": seen, "status": status}


def test_parallel_sessions_do_not_cross(server, tmp_path: Path):
    url, root = server
    images = [session_image(i) for i in range(SESSIONS)]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"session{i}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    with ThreadPoolExecutor(SESSIONS) as pool:
        results = list(pool.map(lambda path: run_session(url, path), paths))  # re-raises any session's error
    for image, result in zip(images, results):
        own = stored_name(image)
        assert result["seen"] == [own] * REQUESTS, result["seen"]
        assert f"**{own}**" in result["status"], result["status"]
    saved = {json.loads(p.read_text())["image"] for p in (root / "uploads" / ".qmn" / "annotations").glob("*.json")}
    assert saved == {stored_name(image) for image in images}
