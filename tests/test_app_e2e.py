"""End to end through gradio_client on 127.0.0.1: segment -> review -> export, checked with pycocotools.

Uses a real (random-weight) tiny QueryMeldNet: the point is the wiring, not the masks' quality. Refusals come
back as the status message (output 3 of the annotate view), never as an error."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from gradio_client import Client, handle_file
from pycocotools.coco import COCO

from app.studio import Studio
from app.model_host import ModelHost
from app.ui import start_in_background


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from qmn import QueryMeldNet, get_preset

    model = QueryMeldNet(get_preset("tiny", enc_layers=1, dec_layers=1, image_size=128)).eval()
    root = tmp_path_factory.mktemp("workspace")
    demo, url = start_in_background(Studio(ModelHost(model=model), root, make_examples=False))
    yield url, root
    demo.close()


@pytest.fixture()
def image_file(tmp_path: Path) -> Path:
    img = np.full((96, 128, 3), 30, np.uint8)
    img[20:70, 30:90] = (220, 180, 40)
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), img)
    return path


STATUS = 3  # (overlay, mask table, legend, status, selected, image list): gr.State is not sent


def region_ids(table: dict) -> list[int]:
    return [int(row[0]) for row in table["data"]]


def reviews(table: dict) -> dict[int, str]:
    return {int(row[0]): row[4] for row in table["data"]}


def test_segment_correct_export(server, image_file: Path, tmp_path: Path):
    url, root = server
    c = Client(url, verbose=False)
    out = c.predict(handle_file(str(image_file)), "block, ground", "instance", 0.0, "[[30, 20, 90, 70]]", "",
                    api_name="/segment")
    summary = out[-1]
    assert summary["image"].startswith("image_") and summary["segments"]
    assert "prompted" in {s["query_type"] for s in summary["segments"]}
    # correct: box by GrabCut, relabel it, reject another, undo/redo
    table = c.predict("[30, 20, 90, 70]", "block", "grabcut", "", api_name="/add_box")[1]
    new_id = max(region_ids(table))
    assert reviews(table)[new_id] == "edited"
    c.predict("the block", api_name="/relabel")
    first = min(region_ids(table))
    c.predict(first, api_name="/select_region")
    after_reject = c.predict(api_name="/reject")[1]
    assert reviews(after_reject)[first] == "rejected"  # kept, visible as rejected, never exported
    assert reviews(c.predict(api_name="/undo")[1])[first] == "proposed"
    assert reviews(c.predict(api_name="/redo")[1])[first] == "rejected"
    # the autosave is on disk
    saved = json.loads(next((root / "uploads" / ".qmn" / "annotations").glob("*.json")).read_text())
    assert saved["state"] == "in review" and "the block" in {r["label"] for r in saved["regions"]}
    vouched = [r for r in saved["regions"] if r["review"] in ("accepted", "edited")]
    proposed = [r for r in saved["regions"] if r["review"] == "proposed"]
    # export and check the COCO file with pycocotools: only what a person vouched for
    zip_file, report, images, message = c.predict(["coco_instances", "coco_panoptic", "mask_pngs", "cutouts"], "rle",
                                                  False, api_name="/export")
    assert report["coco_annotations_checked"] == len(vouched) and report["proposals_left_out"] == len(proposed)
    assert f"left out {len(proposed)}" in message or not proposed
    with zipfile.ZipFile(zip_file) as zf:
        zf.extractall(tmp_path / "unz")
    coco = COCO(str(tmp_path / "unz" / "instances.json"))
    block = [a for a in coco.anns.values() if coco.cats[a["category_id"]]["name"] == "the block"]
    assert len(block) == 1 and block[0]["attributes"] == {"review": "edited"}
    m = coco.annToMask(block[0]).astype(bool)
    assert m[45, 60] and not m[5, 5]  # GrabCut found the yellow block
    assert {row[2] for row in images["data"]} == {"yes"}


def test_sessions_are_isolated(server, image_file: Path):
    url, _ = server
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    a.predict(handle_file(str(image_file)), "", "foreground", 0.0, "", "", api_name="/segment")
    assert "no image is open" in b.predict(api_name="/accept_all")[STATUS]


def test_bad_input_gives_clear_messages(server, image_file: Path, tmp_path: Path):
    url, _ = server
    c = Client(url, verbose=False)
    assert "type at least one prompt" in c.predict(handle_file(str(image_file)), "  ", "instance", 0.3, "", "",
                                                   api_name="/segment")[STATUS]
    assert "boxes: not valid JSON" in c.predict(handle_file(str(image_file)), "a", "instance", 0.3, "[[1,2", "",
                                                api_name="/segment")[STATUS]
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG broken")
    assert "not a readable image" in c.predict([handle_file(str(bad))], api_name="/upload")[STATUS]
    assert "safetensors" in c.predict(str(bad), None, "cpu", api_name="/load_checkpoint")[-1]
    assert "leaves the workspace" in c.predict("../..", api_name="/open_folder")[STATUS]
    assert "nothing to roll back to" in c.predict(api_name="/rollback")[0]
    status = c.predict(api_name="/finetune_status")
    assert status[0]["phase"] == "idle"


def test_upload_then_run_all_labels_every_new_image(server, image_file: Path, tmp_path: Path):
    url, _ = server
    c = Client(url, verbose=False)
    c.predict("uploads", api_name="/open_folder")
    other = tmp_path / "weird name!.png"
    cv2.imwrite(str(other), np.full((40, 50, 3), 200, np.uint8))
    listing = c.predict([handle_file(str(other))], api_name="/upload")[5]
    names = [row[0] for row in listing["data"]]
    assert any(n.startswith("weird") for n in names) and all(" " not in n and "!" not in n for n in names)
    message, listing = c.predict("block", "instance", 0.0, api_name="/run_all")
    assert message.startswith("Done") and "new" not in {row[1] for row in listing["data"]}
    assert "no folder is open" in Client(url, verbose=False).predict(1, api_name="/finetune_start")[0]


def test_threshold_slider_follows_load_and_rollback(server, micro_cfg, tmp_path: Path):
    """Loading a checkpoint (or rolling back) puts that model's calibrated threshold on the slider."""
    from dataclasses import replace

    from qmn import QueryMeldNet, get_preset

    url, _ = server
    path = tmp_path / "calibrated.safetensors"
    QueryMeldNet(replace(micro_cfg, score_threshold=0.77)).save(str(path))
    c = Client(url, verbose=False)
    _, _, threshold, message = c.predict(str(path), None, "cpu", api_name="/load_checkpoint")
    assert threshold == pytest.approx(0.77) and "Loaded" in message
    message, _, _, threshold = c.predict(api_name="/rollback")
    assert threshold == pytest.approx(get_preset("tiny").score_threshold) and "Rolled back" in message
    assert "nothing to roll back to" in c.predict(api_name="/rollback")[0]  # a second roll back is a message
