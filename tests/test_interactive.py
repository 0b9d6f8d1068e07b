"""Interactive assists: simulated clicks (benchmark protocol and training sequences), crop-around-prompt geometry,
guarded GrabCut from a box and from clicks, training prompts with negative clicks, and the interactive benchmark."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from bench import interactive
from qmn.batching import sample_prompts
from qmn.click_sim import next_click, perturb_mask, simulate_clicks
from qmn.grabcut import box_prior, grabcut_click_update, grabcut_from_box, grabcut_from_clicks, plausible_in_box
from qmn.prompt_crop import (box_to_crop, click_extent, clicks_to_crop, crop_around, paste, predict_boxes_on_crops,
                             segment_on_crop)
from qmn.structures import Prediction, Segment
from tests.conftest import shared_dataset


def square(h: int = 60, w: int = 80, y0: int = 10, y1: int = 40, x0: int = 10, x1: int = 40) -> np.ndarray:
    gt = np.zeros((h, w), bool)
    gt[y0:y1, x0:x1] = True
    return gt


def object_scene() -> tuple[np.ndarray, np.ndarray]:
    """A yellow disc on a noisy dark background (seeded) and its mask."""
    rng = np.random.default_rng(0)
    img = (rng.random((120, 160, 3)) * 60).astype(np.uint8)
    yy, xx = np.mgrid[0:120, 0:160]
    obj = (yy - 60) ** 2 + (xx - 70) ** 2 < 30 ** 2
    img[obj] = (230, 200, 40)
    return img, obj


# ---------------------------------------------------------------------------------------------- clicks
def test_next_click_follows_the_ritm_protocol():
    gt = square()
    x, y, positive = next_click(gt, np.zeros_like(gt))  # first click: the object's most interior pixel
    assert positive and abs(x - 25) <= 1 and abs(y - 25) <= 1
    spill = gt.copy()
    spill[5:55, 40:78] = True  # the prediction spills far to the right: the next click is negative, out there
    x, y, positive = next_click(gt, spill)
    assert not positive and 40 <= x <= 78 and not gt[int(y), int(x)]
    assert next_click(gt, gt) is None


def test_training_click_sequences_are_seeded_and_land_in_the_errors():
    gt = square(128, 128, 30, 90, 40, 100)
    rng = np.random.default_rng(0)
    signs = []
    for _ in range(100):
        clicks, _ = simulate_clicks(gt, rng, max_clicks=4)
        assert 1 <= len(clicks) <= 4 and clicks[0][2]  # a session starts with a positive click
        for x, y, positive in clicks:
            assert gt[int(y), int(x)] == positive  # positive clicks on the object, negative ones off it
            signs.append(positive)
    assert 0.05 < 1 - np.mean(signs) < 0.6  # negative clicks are a real share of the clicks
    a, b = simulate_clicks(gt, np.random.default_rng(5))[0], simulate_clicks(gt, np.random.default_rng(5))[0]
    assert a == b
    assert simulate_clicks(np.zeros((8, 8), bool), rng) == ([], pytest.approx(np.zeros((8, 8), bool)))
    wrong = [perturb_mask(gt, np.random.default_rng(s)) for s in range(10)]
    assert any((w != gt).sum() > 100 for w in wrong)


def test_training_prompts_carry_negative_clicks():
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[0, 5:30, 5:30] = masks[1, 30:60, 10:50] = masks[2, 10:25, 35:60] = True
    targets = [{"has_mask": torch.ones(3, dtype=torch.bool), "masks": masks,
                "boxes": torch.tensor([[0.27, 0.27, 0.4, 0.4], [0.47, 0.7, 0.63, 0.47], [0.74, 0.27, 0.4, 0.23]])}]
    labels = []
    for seed in range(30):
        prompts, assign = sample_prompts(targets, 3, np.random.default_rng(seed))
        labels.append(prompts.point_labels)
        click_only = ~prompts.from_box[0]
        assert (prompts.point_labels[0][click_only][:, 0] == 1).all()  # a click-only prompt starts positive
    labels = torch.cat(labels)
    assert (labels == 0).any() and (labels == 1).any() and prompts.points.shape[2] == labels.shape[-1]


# ---------------------------------------------------------------------------------------------- crop geometry
def test_crop_around_is_square_with_context_and_stays_inside():
    assert crop_around([100, 100, 150, 120], (600, 800)) == (80, 65, 170, 155)  # 50 px box + 40% each side = 90 px
    x0, y0, x1, y1 = crop_around([0, 0, 30, 30], (600, 800))  # at a corner: shifted, not shrunk
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0 == 54
    assert crop_around([0, 0, 800, 600], (600, 800)) == (0, 0, 800, 600)  # larger than the image: clipped
    x0, _, x1, _ = crop_around([10, 10, 11, 11], (600, 800), min_side=48)  # a tiny box still gets surroundings
    assert x1 - x0 == 48
    with pytest.raises(ValueError):
        crop_around([5, 5, 1, 1], (10, 10))


def test_prompt_coordinates_round_trip_through_a_crop():
    crop = (20, 10, 120, 110)
    assert np.allclose(box_to_crop([30, 40, 50, 60], crop), [10, 30, 30, 50])
    assert clicks_to_crop([(25, 15, True), (200, 15, False)], crop) == [(5.0, 5.0, True)]
    small = np.zeros((100, 100), bool)
    small[5:10, 5:10] = True
    full = paste(small, crop, (200, 300))
    assert full.shape == (200, 300) and full.sum() == 25 and full[15:20, 25:30].all()
    with pytest.raises(ValueError, match="crop"):
        paste(small[:50], crop, (200, 300))


def test_click_extent_grows_from_the_first_click_to_the_previous_mask():
    assert click_extent([(5, 5, False)], None, (100, 200)) is None
    x0, y0, x1, y1 = click_extent([(100, 50, True)], None, (100, 200))
    assert x1 - x0 == pytest.approx(50) and (x0 + x1) / 2 == pytest.approx(100)
    prev = square(100, 200, 20, 40, 30, 90)
    assert click_extent([(100, 50, True), (10, 10, False)], prev, (100, 200)) == (30.0, 20.0, 100.0, 50.0)


def test_segment_on_crop_sees_the_crop_and_pastes_back_full_size():
    image = np.zeros((300, 400, 3), np.uint8)
    seen = {}

    def segment(crop, boxes, clicks):
        seen.update(shape=crop.shape, boxes=boxes, clicks=clicks)
        return [np.ones(crop.shape[:2], bool)]

    box = [100, 100, 150, 150]
    mask = segment_on_crop(segment, image, box, boxes=[box], clicks=[(120, 120, True)])[0]
    assert seen["shape"] == (90, 90, 3) and np.allclose(seen["boxes"][0], [20, 20, 70, 70])
    assert seen["clicks"] == [(40.0, 40.0, True)] and mask.shape == (300, 400) and mask.sum() == 90 * 90


# ---------------------------------------------------------------------------------------------- GrabCut
def test_grabcut_guard_rejects_collapsed_results():
    good = np.zeros((40, 40), bool)
    good[2:38, 5:35] = True
    assert plausible_in_box(good)
    sliver = np.zeros((40, 40), bool)
    sliver[:3, :] = True
    assert not plausible_in_box(sliver)  # too little of the box, touching one side
    assert not plausible_in_box(np.ones((40, 40), bool))  # the whole box: nothing was separated
    ring = good.copy()
    ring[8:32, 10:30] = False
    assert not plausible_in_box(ring)  # misses the box's middle
    pieces = np.zeros((40, 40), bool)
    for y in range(0, 40, 10):
        pieces[y:y + 4, :] = True
        pieces[:, y:y + 1] = False
    assert not plausible_in_box(pieces)  # many fragments


def test_grabcut_from_box_finds_the_object_or_falls_back_to_the_box():
    img, obj = object_scene()
    box = [36, 26, 104, 94]
    assert interactive.mask_iou(grabcut_from_box(img, box), obj) > 0.85
    flat = np.full((60, 60, 3), 90, np.uint8)  # nothing to separate: the ellipse inscribed in the box comes back
    fallback = grabcut_from_box(flat, [5, 5, 40, 40])
    assert np.array_equal(fallback[5:40, 5:40], box_prior(35, 35)) and not fallback[:5].any()
    assert 0.7 < box_prior(35, 35).mean() < 0.85  # pi / 4 of the box


def test_grabcut_from_clicks_grows_from_a_click_and_obeys_negative_ones():
    img, obj = object_scene()
    first = grabcut_from_clicks(img, [(70.5, 60.5, True)])
    assert interactive.mask_iou(first, obj) > 0.7 and first[60, 70]
    negative = grabcut_from_clicks(img, [(70.5, 60.5, True), (75.5, 62.5, False)], previous=first)
    assert not negative[62, 75]
    assert not grabcut_from_clicks(img, [(10, 10, False)]).any()


def test_clicks_on_a_large_photo_are_solved_coarse_to_fine(monkeypatch):
    """A crop larger than the coarse size goes through the 128 px solve and one fine pass: the object is found with
    its full-resolution boundary, and hard seeds hold at both scales."""
    import qmn.grabcut as grabcut

    img, obj = object_scene()
    img = cv2.resize(img, (640, 480), interpolation=cv2.INTER_NEAREST)
    obj = cv2.resize(obj.astype(np.uint8), (640, 480), interpolation=cv2.INTER_NEAREST) > 0
    sizes = []
    real = grabcut._run_grabcut

    def recording(crop, labels, rect, iterations, seeds=(), work_size=grabcut.WORK_SIZE):
        sizes.append((work_size, iterations))
        return real(crop, labels, rect, iterations, seeds, work_size)

    monkeypatch.setattr(grabcut, "_run_grabcut", recording)
    first = grabcut_from_clicks(img, [(280.5, 240.5, True)])
    assert sizes == [(grabcut.COARSE_SIZE, 3), (grabcut.WORK_SIZE, 1)]
    assert interactive.mask_iou(first, obj) > 0.9
    negative = grabcut_from_clicks(img, [(280.5, 240.5, True), (300.5, 250.5, False)], previous=first)
    assert not negative[250, 300] and negative[240, 280]


def test_a_click_corrects_only_the_piece_under_it():
    """Two objects; the previous mask holds the first one and a stray blob of background far from both. A positive
    click on the second object adds it; the first object and the blob (not under the click) stay as they were."""
    img, obj = object_scene()
    second = np.zeros_like(obj)
    second[15:35, 125:150] = True
    img[second] = (230, 200, 40)
    stray = np.zeros_like(obj)
    stray[100:112, 5:20] = True
    previous = obj | stray
    out = grabcut_click_update(img, [(70.5, 60.5, True), (137.5, 25.5, True)], previous)
    assert out[25, 137] and interactive.mask_iou(out & second, second) > 0.8
    assert (out[obj] == previous[obj]).all() and out[stray].all()
    near_second = cv2.dilate(second.astype(np.uint8), np.ones((11, 11), np.uint8)) > 0
    assert not ((out != previous) & ~near_second).any()  # nothing changed away from the clicked object
    # a negative click on the blob removes it, and nothing else
    cleaned = grabcut_click_update(img, [(70.5, 60.5, True), (12.5, 105.5, False)], previous)
    assert not cleaned[105, 12] and (cleaned[obj] == previous[obj]).all()


def test_a_click_always_ends_on_its_own_side():
    flat = np.full((60, 80, 3), 128, np.uint8)  # nothing for GrabCut to separate
    previous = square()
    out = grabcut_click_update(flat, [(20.5, 20.5, True), (60.5, 50.5, True)], previous)
    assert out[50, 60] and (out[previous] == True).all()  # noqa: E712
    out = grabcut_click_update(flat, [(20.5, 20.5, True), (25.5, 25.5, False)], previous)
    assert not out[25, 25]


# ---------------------------------------------------------------------------------------------- the benchmark
def test_interactive_benchmark_prints_the_protocol(micro_model, tmp_path, capsys):
    shared_dataset("fruitsnuts")
    checkpoint = tmp_path / "m.safetensors"
    micro_model.save(checkpoint)
    assert interactive.main(["--checkpoint", str(checkpoint), "--sets", "fruitsnuts", "--max-instances", "1",
                             "--max-clicks", "5", "--latency-repeats", "0", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    result = report["sets"]["fruitsnuts"]
    assert result["instances"] == 1 and set(result["clicks"]) == set(interactive.CLICK_METHODS)
    for method, entry in result["clicks"].items():
        assert 1 <= entry["noc@85"] <= entry["noc@90"] <= 5 and 0 <= entry["iou@1"] <= 1, method
    assert set(result["box_iou"]["true"]) == set(interactive.BOX_METHODS)
    assert result["box_iou"]["true"]["box"] > 0.3


def test_box_path_on_crops_keeps_order_attaches_clicks_and_pastes_back():
    image = np.zeros((300, 400, 3), np.uint8)
    calls = []

    def predict(img, boxes=None, points=None):
        calls.append((img.shape[:2], boxes, points))
        mask = np.zeros(img.shape[:2], bool)
        mask[0, 0] = True
        return Prediction("instance", [], [Segment("object", 1.0, mask, np.zeros(4, np.float32), "prompted")])

    segs = predict_boxes_on_crops(predict, image, [[100, 100, 150, 150], [300, 200, 310, 210]],
                                  [(120, 120, True), (10, 10, True), (305, 205, False)])
    assert [c[0] for c in calls] == [(90, 90), (48, 48), (300, 400)]  # two crops, then the loose click on the image
    assert calls[0][2] == [(40.0, 40.0, True)] and calls[1][2] == [(24.0, 24.0, False)]
    assert calls[2][1] is None and calls[2][2] == [(10, 10, True)]
    assert [s.id for s in segs] == [1, 2, 3]
    assert segs[0].mask.shape == (300, 400) and segs[0].mask[80, 80] and np.allclose(segs[0].box, [80, 80, 80, 80])
