"""App logic without a browser or a model: annotation JSON, workspace states, undo/redo + autosave,
tools, export (re-read with pycocotools), fine-tune log reading."""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np

from qmn.grabcut import grabcut_from_box
import pytest
from pycocotools.coco import COCO

from app import tools
from app.actions import draw
from app.annotations import ImageAnnotations, Region, from_json, to_json
from app.export import export_folder
from app.finetune import FineTuneJob, find_checkpoint
from app.training_set import MIN_DONE_IMAGES, write_training_set
from train.log import read_jsonl
from app.session import SessionState
from app.workspace import Workspace, sanitize_filename
from qmn.data.mask_codec import decode_rle, encode_rle
from qmn.prompts import parse_prompts


def disk(h: int, w: int, cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / name), img)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return tmp_path


def opened(folder: Path, name: str = "a.png") -> SessionState:
    s = SessionState()
    s.open_image(Workspace(folder), name)
    return s


def test_rle_and_json_round_trip_keep_masks_and_alpha():
    mask = disk(30, 40, 20, 15, 8)
    mask[15, 20] = False  # a hole
    assert np.array_equal(decode_rle(encode_rle(mask)), mask)
    alpha = mask.astype(np.float32) * 0.5
    ann = ImageAnnotations("x.png", 30, 40, "instance", ["cat"], [Region(3, "cat", mask, 0.7, "conditional", alpha=alpha)])
    back = from_json(json.loads(json.dumps(to_json(ann))))
    r = back.regions[0]
    assert (r.id, r.label, r.query_type, back.state, back.prompts) == (3, "cat", "conditional", "proposed", ["cat"])
    assert np.array_equal(r.mask, mask)
    assert np.abs(r.alpha - alpha).max() <= 1 / 255


def test_from_json_names_the_bad_field():
    with pytest.raises(ValueError, match="state"):
        from_json({"image": "a", "height": 1, "width": 1, "state": "weird"}, source="a.json")
    with pytest.raises(ValueError, match="a.json"):
        from_json({"image": "a"}, source="a.json")


def test_sanitize_and_upload_refuses_corrupt(folder: Path):
    assert sanitize_filename("../../etc/pass wd.png") == "pass_wd.png"
    assert sanitize_filename("..hidden") == "hidden"
    assert sanitize_filename("") == "upload"
    ws = Workspace(folder)
    with pytest.raises(ValueError, match="evil.png"):
        ws.add_image_bytes("evil.png", b"garbage")
    data = (folder / "a.png").read_bytes()
    assert ws.add_image_bytes("../a.png", data) == "a_1.png"  # no overwrite, no escape
    with pytest.raises(ValueError, match="broken.png"):
        ws.read_image("broken.png")


def test_states_follow_predict_review_done_export(folder: Path, tmp_path: Path):
    s = opened(folder)
    ws = s.workspace
    assert dict((n, st) for n, st, _ in ws.states())["a.png"] == "new"
    with s.edit() as ann:
        ann.regions.append(Region(1, "blob", disk(48, 64, 20, 20, 10), 0.9, "conditional"))
    assert ws.state_of("a.png") == ("proposed", False)
    with s.edit() as ann:
        ann.regions[0].review = "accepted"
    assert ws.state_of("a.png") == ("in review", False)
    with s.edit() as ann:
        ann.done = True
    export_folder(ws, out_root=tmp_path / "out")
    assert ws.state_of("a.png") == ("done", True)
    assert ws.state_of("b.jpg") == ("new", False)  # not written, so not marked exported


def test_image_list_states_follow_saves_by_another_session_and_ignore_bad_files(folder: Path, tmp_path: Path):
    s = opened(folder)
    ws = s.workspace
    listed = lambda: {n: st for n, st, _ in ws.states()}  # noqa: E731
    assert listed()["a.png"] == "new"
    with s.edit() as ann:
        ann.regions.append(Region(1, "blob", disk(48, 64, 20, 20, 10), 0.9, "conditional"))
    assert listed()["a.png"] == "proposed"
    other = Workspace(folder)  # another session saving the same image: the cached state must not hide it
    ann = other.load("a.png")
    ann.regions[0].review = "accepted"
    other.save(ann)
    assert listed()["a.png"] == "in review" and ws.state_of("a.png") == ("in review", False)
    (ws.state_dir / "annotations" / "b.jpg.json").write_text("{not json")
    outside = tmp_path / "outside.json"
    outside.write_text(ws.annotation_path("a.png").read_text())
    (ws.state_dir / "annotations" / "a.png.json").unlink()
    (ws.state_dir / "annotations" / "a.png.json").symlink_to(outside)
    assert listed()["a.png"] == "new" and listed()["b.jpg"] == "new"


def test_undo_redo_restores_and_autosaves(folder: Path):
    s = opened(folder)
    with s.edit() as ann:
        ann.regions.append(Region(1, "a", disk(48, 64, 10, 10, 5)))
    with s.edit() as ann:
        ann.regions[0].label = "b"
    assert s.undo() and s.ann.regions[0].label == "a"
    # the undo itself is autosaved: a fresh session sees it
    assert opened(folder).ann.regions[0].label == "a"
    assert s.redo() and s.ann.regions[0].label == "b"
    assert s.undo() and s.undo() and s.ann.regions == []
    assert not s.undo()
    with s.edit() as ann:  # a new edit clears the redo stack
        ann.regions.append(Region(1, "c", disk(48, 64, 30, 30, 5)))
    assert not s.redo()
    assert opened(folder).ann.regions[0].label == "c"


def test_sessions_do_not_share_state(folder: Path):
    a, b = opened(folder, "a.png"), opened(folder, "b.jpg")
    with a.edit() as ann:
        ann.regions.append(Region(1, "x", disk(48, 64, 10, 10, 5)))
    assert b.ann.regions == [] and b.undo_stack == []


def test_region_at_picks_innermost_visible():
    big = Region(1, "big", disk(50, 50, 25, 25, 20))
    small = Region(2, "small", disk(50, 50, 25, 25, 5))
    assert tools.region_at([big, small], 25, 25) == 2
    assert tools.region_at([big, small], 25, 8) == 1
    small.visible = False
    assert tools.region_at([big, small], 25, 25) == 1
    assert tools.region_at([big, small], 0, 0) is None


def test_box_brush_and_grabcut():
    assert tools.box_from_corners((30, 5), (10, 20), 40, 40) == [10.0, 5.0, 31.0, 21.0]
    with pytest.raises(ValueError, match="too small"):
        tools.box_from_corners((3, 3), (3, 3), 40, 40)
    img = np.full((60, 60, 3), 20, np.uint8)
    img[20:40, 20:40] = (240, 200, 30)
    m = grabcut_from_box(img, [10, 10, 50, 50])
    assert m[30, 30] and not m[12, 12]
    layer = np.zeros((60, 60, 4), np.uint8)
    layer[0:5, 0:5, 3] = 255
    painted = tools.stroke_mask({"background": img, "layers": [layer], "composite": None}, (60, 60))
    assert painted.sum() == 25
    assert tools.apply_brush(m, painted, erase=False)[0, 0]
    assert not tools.apply_brush(m, m, erase=True).any()
    with pytest.raises(ValueError, match="nothing painted"):
        tools.stroke_mask({"layers": []}, (60, 60))


def test_overlay_and_uncertainty():
    img = np.zeros((20, 20, 3), np.uint8)
    r = Region(1, "a", disk(20, 20, 10, 10, 4))
    out = tools.render_overlay(img, [r], selected=1)
    assert out.shape == img.shape and out[10, 10].any() and not out[0, 0].any()
    assert tools.uncertainty([], 0.3) == 1.0
    assert tools.uncertainty([Region(1, "a", r.mask, score=0.3)], 0.3) == 1.0
    assert tools.uncertainty([Region(1, "a", r.mask, score=1.0)], 0.3) == 0.0


def test_export_zip_is_valid_coco(folder: Path, tmp_path: Path):
    s = opened(folder)
    ring = disk(48, 64, 30, 24, 15) & ~disk(48, 64, 30, 24, 6)  # a hole polygons cannot keep
    with s.edit() as ann:
        ann.regions += [Region(1, "ring", ring, 0.8, "learnable", review="accepted"),
                        Region(2, "dot", disk(48, 64, 8, 8, 4), 0.6, "prompted", review="edited")]
    s.ann.regions[1].alpha = s.ann.regions[1].mask.astype(np.float32) * 0.5
    s.workspace.save(s.ann)
    result = export_folder(s.workspace, out_root=tmp_path / "out")
    with zipfile.ZipFile(result.zip_path) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "unz")
    assert {"instances.json", "panoptic.json", "panoptic/a.png", "masks/a/001_ring.png", "cutouts/a/002_dot.png"} <= names
    coco = COCO(str(tmp_path / "unz" / "instances.json"))
    assert len(coco.anns) == 2 and {c["name"] for c in coco.cats.values()} == {"ring", "dot"}
    assert np.array_equal(coco.annToMask(coco.anns[1]).astype(bool), ring)
    cut = cv2.imread(str(tmp_path / "unz" / "cutouts/a/002_dot.png"), cv2.IMREAD_UNCHANGED)
    assert cut.shape[2] == 4 and cut[..., 3].max() == 128  # the matte, not the hard mask
    pan = json.loads((tmp_path / "unz" / "panoptic.json").read_text())
    assert sorted(x["id"] for x in pan["annotations"][0]["segments_info"]) == [1, 2]
    # polygons: qmn.data's writer splices the hole into the outline, the report says nothing was lost
    poly = export_folder(s.workspace, formats=["coco_instances"], encoding="polygons", out_root=tmp_path / "poly")
    assert [x["annotation_id"] for x in poly.report["polygon_iou"]] == [1, 2] and poly.report["polygon_iou_min"] == 1.0
    with zipfile.ZipFile(poly.zip_path) as zf:
        zf.extractall(tmp_path / "unz_poly")
    coco_poly = COCO(str(tmp_path / "unz_poly" / "instances.json"))
    assert isinstance(coco_poly.anns[1]["segmentation"], list)
    assert np.array_equal(coco_poly.annToMask(coco_poly.anns[1]).astype(bool), ring)


def test_export_nothing_is_a_clear_error(folder: Path):
    with pytest.raises(ValueError, match="nothing to export"):
        export_folder(Workspace(folder))
    with pytest.raises(ValueError, match="formats"):
        export_folder(Workspace(folder), formats=["bogus"])


def test_training_set_uses_only_done_images(tmp_path: Path):
    names = [f"im{i}.png" for i in range(MIN_DONE_IMAGES + 1)]
    for name in names:
        cv2.imwrite(str(tmp_path / name), np.full((48, 64, 3), 90, np.uint8))
    sessions = [opened(tmp_path, n) for n in names]
    for s in sessions:
        with s.edit() as ann:
            ann.regions += [Region(1, "a", disk(48, 64, 10, 10, 5), review="accepted"), Region(2, "b", disk(48, 64, 40, 30, 5))]
    with pytest.raises(ValueError, match="marked done"):
        write_training_set(sessions[0].workspace, tmp_path / "d")
    for s in sessions[:MIN_DONE_IMAGES]:
        with s.edit() as ann:
            ann.regions[1].review, ann.done = "rejected", True
    out = write_training_set(sessions[0].workspace, tmp_path / "d")
    assert sorted(p.name for p in (out / "images").iterdir()) == names[:MIN_DONE_IMAGES]
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.anns) == MIN_DONE_IMAGES and {c["name"] for c in coco.cats.values()} == {"a"}


def test_finetune_job_reads_log_and_finds_checkpoint(tmp_path: Path):
    job = FineTuneJob(run_dir=tmp_path / "run", minutes=1)
    job.out_dir.mkdir(parents=True)
    (job.out_dir / "log.jsonl").write_text(
        '{"step": 1, "loss": 2.0}\n{"step": 2, "eval": {"score": 0.4}}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert [r["step"] for r in read_jsonl(job.out_dir / "log.jsonl")] == [1, 2, 2]
    st = job.status()
    assert st["losses"] == [(1, 2.0), (2, 1.5)] and st["metrics_after"] == {"score": 0.4}
    (job.out_dir / "before_after.json").write_text('{"before": {"score": 0.1}, "after": {"score": 0.5}}')
    assert job.status()["metrics_before"] == {"score": 0.1} and job.status()["metrics_after"] == {"score": 0.5}
    (job.out_dir / "train_state.safetensors").write_bytes(b"x")
    assert find_checkpoint(job.out_dir) is None
    (job.out_dir / "last.safetensors").write_bytes(b"x")
    assert find_checkpoint(job.out_dir).name == "last.safetensors"
    (job.out_dir / "best.safetensors").write_bytes(b"x")
    assert find_checkpoint(job.out_dir).name == "best.safetensors"


def test_finetune_cancel_terminates_the_process(tmp_path: Path):
    import subprocess

    job = FineTuneJob(run_dir=tmp_path, minutes=1)
    job.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert job.running
    job.cancel()
    assert not job.running and job.status()["phase"] == "cancelled"


def test_parse_prompts():
    """The app parses prompts with qmn's one rule: commas and new lines separate classes; a referring phrase keeps
    its commas (phrases go one per line)."""
    assert parse_prompts(" person, dog , ,sky\nthe red car", "instance") == ["person", "dog", "sky", "the red car"]
    assert parse_prompts(None, "instance") == [] and parse_prompts(["a", " "], "instance") == ["a"]
    assert parse_prompts("the dog, left of the car\nthe sky", "referring") == ["the dog, left of the car", "the sky"]


def test_refine_edges_softens_a_blurred_edge_and_keeps_a_crisp_one(tmp_path: Path):
    # a red square whose left edge is blurred (soft, like fur) and whose other edges are crisp, on blue
    image = np.zeros((80, 80, 3), np.uint8)
    image[:] = (30, 30, 200)
    image[20:60, 20:60] = (200, 40, 40)
    image[:, :40] = cv2.GaussianBlur(image, (0, 0), 3)[:, :40]
    ws = Workspace(tmp_path)
    s = SessionState()
    s.open_image(ws, ws.add_image_array("square", image))
    square = np.zeros((80, 80), bool)
    square[20:60, 20:60] = True
    with s.edit() as ann:
        ann.regions.append(Region(1, "box", square, 0.9, "conditional"))
    s.selected = 1
    reply = draw.refine_edges(s, 0)  # auto: a straight mask edge is not ragged, so there is no band: told so
    assert not reply.ok and "smooth and certain" in reply.message and s.ann.region(1).alpha is None
    reply = draw.refine_edges(s, 3)
    alpha = s.ann.region(1).alpha
    assert reply.ok and "3 px" in reply.message
    assert ((alpha > 0.05) & (alpha < 0.95))[25:55, 14:26].any()  # the blurred edge is soft now
    assert np.array_equal(alpha[25:55, 56:64], square[25:55, 56:64].astype(np.float32))  # the crisp one kept
    assert not draw.refine_edges(s, -2).ok
