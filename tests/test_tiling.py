"""Tiled inference: windows cover the image with cores that partition it, and objects come back once, whole, at
their place in the photo."""
from __future__ import annotations

import numpy as np
import pytest

from qmn.structures import Prediction, Segment
from qmn.tiling import inference_scale, tile_windows, tiled_predict


@pytest.mark.parametrize("h,w,tile,overlap", [(100, 100, 256, 64), (600, 1000, 256, 64), (257, 513, 256, 32)])
def test_windows_cover_and_cores_partition(h, w, tile, overlap):
    windows = tile_windows(h, w, tile, overlap)
    covered, cores = np.zeros((h, w), int), np.zeros((h, w), int)
    for win in windows:
        assert win.x1 - win.x0 <= tile and win.y1 - win.y0 <= tile
        covered[win.y0:win.y1, win.x0:win.x1] += 1
        x0, y0, x1, y1 = win.core
        assert win.x0 <= x0 and x1 <= win.x1 and win.y0 <= y0 and y1 <= win.y1
        cores[y0:y1, x0:x1] += 1
    assert (covered >= 1).all() and (cores == 1).all()


def test_inference_scale_keeps_the_photo_scale_up_to_the_cap():
    assert inference_scale(1024, 1280, 256, 2048) == 1.0
    assert inference_scale(1024, 1280, 256, 640) == 0.5
    assert inference_scale(100, 128, 256, 2048) == 2.0  # small photos fill one tile


def _fake_model(image: np.ndarray) -> Prediction:
    """One segment per connected bright blob of a window, box in window pixels; blobs cut by the window's border come
    back too (partial, as a real model's would), so the merge must pick the window that sees each object whole."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats((image[..., 0] > 128).astype(np.uint8))
    segs = []
    for i in range(1, n):
        x, y, w, h = stats[i, :4]
        mask = labels == i
        segs.append(Segment("nut", 0.9, mask, np.array([x, y, x + w, y + h], np.float32), "conditional"))
    return Prediction("instance", ["nut"], segs, image_size=image.shape[:2])


def test_every_object_comes_back_once_whole_and_in_place():
    rng = np.random.default_rng(0)
    h, w = 700, 900
    image = np.zeros((h, w, 3), np.uint8)
    truth = []
    for y in range(30, h - 40, 90):  # a grid of 40 px squares, many of them across window borders
        for x in range(20, w - 40, 85):
            x0, y0 = x + int(rng.integers(0, 20)), y + int(rng.integers(0, 20))
            image[y0:y0 + 40, x0:x0 + 40] = 255
            truth.append((x0, y0))
    pred = tiled_predict(image, _fake_model, "instance", ["nut"], tile=256, overlap=64, max_side=4096)
    found = sorted((int(s.box[0]), int(s.box[1])) for s in pred.segments)
    assert found == sorted(truth)
    for s in pred.segments:
        x0, y0 = int(s.box[0]), int(s.box[1])
        assert s.mask.shape == (h, w) and s.mask.sum() == 1600 and s.mask[y0:y0 + 40, x0:x0 + 40].all()


def test_capped_photo_maps_back_to_photo_pixels():
    image = np.zeros((800, 1000, 3), np.uint8)
    image[400:480, 600:680] = 255
    pred = tiled_predict(image, _fake_model, "instance", ["nut"], tile=256, overlap=64, max_side=500)
    assert len(pred.segments) == 1
    assert np.allclose(pred.segments[0].box, [600, 400, 680, 480], atol=2)
    assert pred.segments[0].mask.shape == (800, 1000)


def test_only_the_best_segments_of_all_windows_are_kept():
    """At an AP threshold every window answers ~100 segments; the photo keeps its best `max_segments` (as a
    whole-image pass keeps its top 100) instead of pasting thousands of full-size masks."""
    image = np.zeros((600, 900, 3), np.uint8)
    for k, x in enumerate(range(20, 860, 60)):
        image[280:320, x:x + 40] = 255 - k  # each blob's score follows its brightness
    scored = lambda window: Prediction("instance", ["nut"], [  # noqa: E731
        Segment(s.label, float(window[s.mask].mean()) / 255, s.mask, s.box, s.query_type)
        for s in _fake_model(window).segments], image_size=window.shape[:2])
    everything = tiled_predict(image, scored, "instance", ["nut"], tile=256, overlap=64, max_side=4096)
    best = tiled_predict(image, scored, "instance", ["nut"], tile=256, overlap=64, max_side=4096, max_segments=5)
    assert len(everything.segments) == 14 and len(best.segments) == 5
    assert [s.score for s in best.segments] == [s.score for s in everything.segments[:5]]
    assert sorted(int(s.box[0]) for s in best.segments) == [20, 80, 140, 200, 260]
