"""End to end through gradio_client on 127.0.0.1: segment -> correct -> export, checked with pycocotools.

Uses a real (random-weight) tiny QueryMeldNet: the point is the wiring, not the masks' quality."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from gradio_client import Client, handle_file
from pycocotools.coco import COCO

from app.handlers import Studio
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


def region_ids(table: dict) -> list[int]:
    return [int(row[0]) for row in table["data"]]


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
    c.predict("the block", api_name="/relabel")
    first = min(region_ids(table))
    c.predict(first, api_name="/select_region")
    after_reject = c.predict(api_name="/reject")[1]
    assert first not in region_ids(after_reject)
    assert first in region_ids(c.predict(api_name="/undo")[1])
    assert first not in region_ids(c.predict(api_name="/redo")[1])
    # the autosave is on disk
    saved = json.loads(next((root / "uploads" / ".qmn" / "annotations").glob("*.json")).read_text())
    assert saved["state"] == "corrected" and "the block" in {r["label"] for r in saved["regions"]}
    # export and check the COCO file with pycocotools
    zip_file, report, images = c.predict(["coco_instances", "coco_panoptic", "mask_pngs", "cutouts"], "rle",
                                         api_name="/export")
    assert report["coco_annotations_checked"] == len(saved["regions"])
    with zipfile.ZipFile(zip_file) as zf:
        zf.extractall(tmp_path / "unz")
    coco = COCO(str(tmp_path / "unz" / "instances.json"))
    block = [a for a in coco.anns.values() if coco.cats[a["category_id"]]["name"] == "the block"]
    assert len(block) == 1
    m = coco.annToMask(block[0]).astype(bool)
    assert m[45, 60] and not m[5, 5]  # GrabCut found the yellow block
    assert {row[1] for row in images["data"]} == {"exported"}


def test_sessions_are_isolated(server, image_file: Path):
    url, _ = server
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    a.predict(handle_file(str(image_file)), "", "foreground", 0.0, "", "", api_name="/segment")
    with pytest.raises(Exception, match="no image is open"):
        b.predict(api_name="/accept_all")


def test_bad_input_gives_clear_messages(server, image_file: Path, tmp_path: Path):
    url, _ = server
    c = Client(url, verbose=False)
    with pytest.raises(Exception, match="type at least one prompt"):
        c.predict(handle_file(str(image_file)), "  ", "instance", 0.3, "", "", api_name="/segment")
    with pytest.raises(Exception, match="boxes: not valid JSON"):
        c.predict(handle_file(str(image_file)), "a", "instance", 0.3, "[[1,2", "", api_name="/segment")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(Exception, match="not a readable image"):
        c.predict([handle_file(str(bad))], api_name="/upload")
    with pytest.raises(Exception, match="safetensors"):
        c.predict(str(bad), None, "cpu", api_name="/load_checkpoint")
    with pytest.raises(Exception, match="leaves the workspace"):
        c.predict("../..", api_name="/open_folder")
    status = c.predict(api_name="/finetune_status")
    assert status[0]["phase"] == "idle"


def test_upload_then_run_all_labels_every_new_image(server, image_file: Path, tmp_path: Path):
    url, _ = server
    c = Client(url, verbose=False)
    c.predict("uploads", api_name="/open_folder")
    other = tmp_path / "weird name!.png"
    cv2.imwrite(str(other), np.full((40, 50, 3), 200, np.uint8))
    listing = c.predict([handle_file(str(other))], api_name="/upload")[-1]
    names = [row[0] for row in listing["data"]]
    assert any(n.startswith("weird") for n in names) and all(" " not in n and "!" not in n for n in names)
    message, listing = c.predict("block", "instance", 0.0, api_name="/run_all")
    assert message.startswith("Done") and "new" not in {row[1] for row in listing["data"]}
    with pytest.raises(Exception, match="no folder is open"):
        Client(url, verbose=False).predict(1, api_name="/finetune_start")
