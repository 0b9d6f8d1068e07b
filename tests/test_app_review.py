"""Issue 15's rules without a browser: review states and their migration, what an export and a fine-tune may use,
replies instead of errors for every user action, fine-tune phases and the switch verdict, session continuity."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from app.actions import finetune, navigate, review
from app.actions.model import load_checkpoint
from app.annotations import Region, from_json
from app.export import export_folder
from app.finetune import FineTuneJob, FineTuneRegistry, verdict
from app.model_host import ModelHost
from app.session import SessionState
from app.training_set import MIN_DONE_IMAGES, training_refusal
from app.workspace import Workspace

H, W = 40, 48


def disk(cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Six images, each with three proposals (as after "Run on all")."""
    root = tmp_path / "ws"
    root.mkdir()
    for i in range(6):
        cv2.imwrite(str(root / f"im{i}.png"), np.full((H, W, 3), 40 * i, np.uint8))
        s = open_at(root, f"im{i}.png")
        with s.edit() as ann:
            ann.regions = [Region(k + 1, label, disk(8 + 14 * k, 20, 5), 0.5 + 0.1 * k, "conditional")
                           for k, label in enumerate(("cat", "dog", "sky"))]
    return root


def open_at(root: Path, name: str) -> SessionState:
    s = SessionState()
    s.open_image(Workspace(root), name)
    return s


def review_image(root: Path, name: str, done: bool = True) -> SessionState:
    """Accept the best proposal, reject the next, relabel (edit) the third; optionally mark the image done."""
    s = open_at(root, name)
    assert review.accept(s).ok  # selection starts at the best proposal (#3 sky)
    assert review.reject(s).ok  # then moves on (#2 dog)
    assert review.relabel(s, "cat toy").ok  # #1, now edited
    if done:
        assert review.mark_done(s).ok
    return s


def test_legacy_files_migrate():
    mask = disk(10, 10, 4)
    from qmn.data.mask_codec import encode_rle

    def legacy(state: str, accepted: list[tuple[bool, str]]) -> dict:
        return {"image": "a.png", "height": H, "width": W, "state": state,
                "regions": [{"id": i + 1, "label": "x", "rle": encode_rle(mask), "accepted": acc, "query_type": qt}
                            for i, (acc, qt) in enumerate(accepted)]}

    ann = from_json(legacy("corrected", [(True, "conditional"), (True, "manual"), (False, "learnable")]))
    assert [r.review for r in ann.regions] == ["accepted", "edited", "proposed"]
    assert (ann.state, ann.done, ann.exported, ann.segmented) == ("in review", False, False, True)
    assert from_json(legacy("predicted", [(False, "conditional")])).state == "proposed"
    exported = from_json(legacy("exported", [(True, "conditional")]))
    assert exported.exported and exported.state == "in review"  # "done" is a person's word: never inferred
    assert from_json(legacy("new", [])).state == "new"
    with pytest.raises(ValueError, match="review"):
        from_json({"format": 2, "image": "a", "height": 1, "width": 1, "regions": [
            {"id": 1, "label": "x", "rle": encode_rle(np.zeros((1, 1), bool)), "review": "maybe"}]})


def test_export_after_reviewing_k_of_n_has_exactly_their_vouched_annotations(folder: Path, tmp_path: Path):
    reviewed = ["im1.png", "im4.png"]
    expected = {}
    for name in reviewed:
        ann = review_image(folder, name, done=name == "im1.png").ann  # one done, one still in review
        expected[name] = sorted((r.label, r.area) for r in ann.regions if r.review in ("accepted", "edited"))
    ws = Workspace(folder)
    result = export_folder(ws, formats=["coco_instances", "coco_panoptic"], out_root=tmp_path / "out")
    with zipfile.ZipFile(result.zip_path) as zf:
        zf.extractall(tmp_path / "unz")
    coco = COCO(str(tmp_path / "unz" / "instances.json"))
    got = {img["file_name"]: sorted((coco.cats[a["category_id"]]["name"], int(coco.annToMask(a).sum()))
                                    for a in coco.imgToAnns[img["id"]]) for img in coco.imgs.values()}
    assert got == expected
    assert {a["attributes"]["review"] for a in coco.anns.values()} == {"accepted", "edited"}
    assert result.report["proposals_left_out"] == 3 * 4  # the four unreviewed images' proposals
    assert result.report["by_review"] == {"accepted": 2, "edited": 2}
    assert {n: exported for n, _, exported in ws.states()} == {f"im{i}.png": f"im{i}.png" in reviewed for i in range(6)}


def test_export_of_proposals_is_explicit_and_labelled(folder: Path, tmp_path: Path):
    review_image(folder, "im0.png")
    result = export_folder(Workspace(folder), formats=["coco_instances"], out_root=tmp_path / "out",
                           include_proposals=True)
    with zipfile.ZipFile(result.zip_path) as zf:
        coco_json = json.loads(zf.read("instances.json"))
    by_review = {}
    for a in coco_json["annotations"]:
        by_review[a["attributes"]["review"]] = by_review.get(a["attributes"]["review"], 0) + 1
    assert by_review == {"accepted": 1, "edited": 1, "proposed": 15} and result.report["proposals_left_out"] == 0


def test_export_with_only_proposals_refuses(folder: Path):
    with pytest.raises(ValueError, match="nothing to export.*18 proposals"):
        export_folder(Workspace(folder))


def test_finetune_refuses_with_only_proposals_and_then_too_few(folder: Path, tmp_path: Path):
    s = open_at(folder, "im0.png")
    reply = finetune.start(s, ModelHost(model=object()), FineTuneRegistry(), 1)
    assert not reply.ok and "marked done" in reply.message and "18 unreviewed proposals" in reply.message
    for i in range(MIN_DONE_IMAGES - 1):
        review_image(folder, f"im{i}.png")
    assert f"{MIN_DONE_IMAGES - 1} done" in training_refusal(Workspace(folder))
    review_image(folder, f"im{MIN_DONE_IMAGES - 1}.png")
    assert training_refusal(Workspace(folder)) == ""


def test_no_action_raises_and_every_refusal_says_why(folder: Path):
    empty = SessionState()
    for action in (review.accept, review.reject, review.mark_done, review.undo, review.redo, review.accept_all,
                   review.toggle_visibility):
        reply = action(empty)
        assert not reply.ok and "no image is open" in reply.message
    s = open_at(folder, "im0.png")
    s.selected = None
    assert "no mask is selected" in review.accept(s).message and "no mask is selected" in review.reject(s).message
    assert review.undo(s).message == "nothing to undo"
    assert review.select_region(s, 99).message == "no mask with id 99 on this image"
    host = ModelHost(model=object())
    assert not finetune.rollback(host).ok and "nothing to roll back" in finetune.rollback(host).message
    assert not navigate.open_image(s, "missing.png").ok
    assert not navigate.open_folder(s, folder, "../..").ok


def test_review_walks_proposals_and_done_rejects_the_rest(folder: Path):
    s = open_at(folder, "im2.png")
    assert s.selected == 3  # the best-scoring proposal
    assert "2 proposals left" in review.accept(s).message and s.selected == 2
    reply = review.mark_done(s)
    assert "2 pending proposals rejected" in reply.message and s.ann.state == "done"
    assert [r.review for r in s.ann.regions] == ["rejected", "rejected", "accepted"]
    assert review.undo(s).ok and s.ann.state == "in review"  # done is undoable like any edit
    assert review.redo(s).ok and Workspace(folder).state_of("im2.png") == ("done", False)


def test_open_folder_without_images_names_subfolders(folder: Path):
    root = folder.parent
    reply = navigate.open_folder(SessionState(), root, ".")
    assert not reply.ok and "folders with images: ws" in reply.message


def test_session_resumes_folder_image_selection_and_prompts(folder: Path):
    root = folder.parent
    s = open_at(folder, "im3.png")
    review.select_region(s, 1)
    saved = json.loads(json.dumps(navigate.remembered(s, root, "cat, dog", "panoptic")))
    fresh = SessionState()
    assert navigate.resume(fresh, root, saved).ok
    assert (fresh.image_name, fresh.selected, saved["prompts"], saved["task"]) == ("im3.png", 1, "cat, dog", "panoptic")
    assert not navigate.resume(SessionState(), root, {"folder": "../..", "image": "x"}).ok


def test_finetune_phases_loss_curve_and_worse_model_not_offered(tmp_path: Path):
    import subprocess
    import sys

    job = FineTuneJob(run_dir=tmp_path / "run", minutes=1)
    job.out_dir.mkdir(parents=True)
    job.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert job.status()["phase"] == "preparing"
        log = job.out_dir / "log.jsonl"
        log.write_text('{"step": 1, "loss": 2.0, "elapsed_s": 6}\n{"step": 2, "loss": 1.5, "elapsed_s": 12}\n')
        st = job.status()
        assert st["phase"] == "training" and len(st["losses"]) == 2 and 0.05 < st["progress"] < 0.9
        log.write_text(log.read_text() + '{"step": 2, "event": "done"}\n')
        assert job.status()["phase"] == "evaluating" and job.status()["progress"] == 0.9
    finally:
        job.process.kill()
        job.process.wait()
    job.process = subprocess.Popen([sys.executable, "-c", "pass"])
    job.process.wait()
    (job.out_dir / "before_after.json").write_text('{"before": {"score": 0.6}, "after": {"score": 0.4}}')
    (job.out_dir / "last.safetensors").write_bytes(b"x")
    st = job.status()
    assert st["phase"] == "finished" and not st["may_switch"] and "below the current 0.600" in st["verdict"]
    assert verdict({"score": 0.4}, {"score": 0.5})[0] and not verdict(None, {"score": 0.5})[0]


def test_threshold_follows_load_and_rollback(tmp_path: Path, micro_cfg):
    from dataclasses import replace

    from qmn import QueryMeldNet, get_preset

    host = ModelHost(model=QueryMeldNet(micro_cfg).eval())
    path = tmp_path / "other.safetensors"
    QueryMeldNet(replace(micro_cfg, score_threshold=0.77)).save(str(path))
    assert load_checkpoint(host, tmp_path, str(path), None, "cpu").ok and host.threshold == pytest.approx(0.77)
    assert finetune.rollback(host).ok and host.threshold == pytest.approx(get_preset("tiny").score_threshold)


def test_status_counts_done_images_and_says_when_it_saved(folder: Path):
    from app.actions import navigate, review
    from app.views import saved_ago, status_line

    session = SessionState()
    assert navigate.open_folder(session, folder.parent, folder.name).ok
    total = len(session.workspace.list_images())
    assert f"0 of {total} done" in status_line(session) and "saved" not in status_line(session)
    assert review.mark_done(session).ok
    assert f"1 of {total} done" in status_line(session)
    assert saved_ago(session, now=session.saved_at + 3) == " · saved 3 s ago"
    assert saved_ago(session, now=session.saved_at + 600) == " · saved 10 min ago"


def test_next_to_review_skips_done_images_and_says_when_none_is_left(folder: Path):
    from app.actions import navigate, review

    session = SessionState()
    navigate.open_folder(session, folder.parent, folder.name)
    names = session.workspace.list_images()
    first = session.image_name
    for _ in names[1:]:  # mark every other image done, walking with the key's action
        assert navigate.step_image(session, 1).ok and review.mark_done(session).ok
    navigate.open_image(session, names[1])
    assert navigate.next_to_review(session).ok and session.image_name == first  # wraps past the done ones
    review.mark_done(session)
    reply = navigate.next_to_review(session)
    assert not reply.ok and f"all {len(names)} images are done" in reply.message
