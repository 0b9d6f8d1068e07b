"""Metrics against values computed by hand (panopticapi / COCOeval conventions)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from qmn.data.sample import Annotation
from qmn.metrics import ConfusionMatrix, CocoAP, MaskIoU, MattingErrors, PanopticQuality, SegmentInfo
from qmn.structures import Segment


def _scene() -> tuple[np.ndarray, list[SegmentInfo]]:
    """32x32 map: stuff "sky" (id 1) on the top half, three "dog" things (ids 2-4) of 4x4 below, rest void."""
    ids = np.zeros((32, 32), np.int32)
    ids[:16] = 1
    ids[20:24, 2:6] = 2
    ids[20:24, 10:14] = 3
    ids[20:24, 20:24] = 4
    return ids, [SegmentInfo(1, "sky"), SegmentInfo(2, "dog"), SegmentInfo(3, "dog"), SegmentInfo(4, "dog")]


ISTHING = {"sky": False, "dog": True, "cat": True}


def test_perfect_panoptic_prediction_scores_one():
    ids, segs = _scene()
    pq = PanopticQuality()
    pq.add(ids, segs, ids.copy(), segs)
    r = pq.result(ISTHING)
    assert (r.all.pq, r.all.sq, r.all.rq, r.all.n) == (1.0, 1.0, 1.0, 2)
    assert r.things.pq == 1.0 and r.stuff.pq == 1.0
    assert "cat" not in r.per_class  # never occurred: not averaged


def test_one_missed_thing_gives_exact_fraction():
    ids, segs = _scene()
    pred = ids.copy()
    pred[pred == 4] = 0  # the third dog is missed
    pq = PanopticQuality()
    pq.add(ids, segs, pred, segs[:3])
    r = pq.result(ISTHING)
    # dog: TP 2, FN 1 -> RQ = 2TP / (2TP + FP + FN) = 4/5, SQ 1
    assert r.per_class["dog"] == {"pq": 0.8, "sq": 1.0, "rq": 0.8, "tp": 2, "fp": 0, "fn": 1}
    assert r.things.pq == pytest.approx(0.8)
    assert r.stuff.pq == 1.0
    assert r.all.pq == pytest.approx(0.9)


def test_void_overlap_is_left_out_of_union_and_mostly_void_predictions_are_ignored():
    ids, segs = _scene()
    pred = ids.copy()
    pred[24, 2:6] = 2  # dog 2 grows 4 pixels onto void: IoU = 16 / (20 - 4) = 1
    pred[28:31, 28:31] = 9  # a 9-pixel "cat" entirely on void: ignored, not a false positive
    pq = PanopticQuality()
    pq.add(ids, segs, pred, segs + [SegmentInfo(9, "cat")])
    r = pq.result(ISTHING)
    assert r.all.pq == 1.0 and "cat" not in r.per_class


def test_crowd_region_forgives_same_class_predictions_only():
    ids = np.zeros((16, 16), np.int32)
    ids[:8] = 1  # a crowd of dogs
    gt = [SegmentInfo(1, "dog", iscrowd=True)]
    pred = np.zeros_like(ids)
    pred[0:4, 0:4] = 1
    pred[4:8, 0:4] = 2
    pq = PanopticQuality()
    pq.add(ids, gt, pred, [SegmentInfo(1, "dog"), SegmentInfo(2, "cat")])
    r = pq.result(ISTHING)
    assert "dog" not in r.per_class  # the dog inside the crowd is no false positive, the crowd no false negative
    assert r.per_class["cat"]["fp"] == 1


def test_match_needs_iou_strictly_above_half_and_same_category():
    gt = np.ones((4, 4), np.int32)  # dog (id 1) on the left 8 pixels, sky (id 2) on the right 8
    gt[:, 2:] = 2
    pred = np.ones_like(gt)  # one 16-pixel dog over both: IoU with the dog exactly 0.5
    pq = PanopticQuality()
    pq.add(gt, [SegmentInfo(1, "dog"), SegmentInfo(2, "sky")], pred, [SegmentInfo(1, "dog")])
    r = pq.result(ISTHING)
    assert r.per_class["dog"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1}
    assert r.per_class["sky"]["fn"] == 1
    gt = gt % 2  # dog on the left, void on the right
    pq = PanopticQuality()
    pq.add(gt, [SegmentInfo(1, "dog")], gt.copy(), [SegmentInfo(1, "cat")])
    r = pq.result(ISTHING)
    assert r.per_class["dog"]["fn"] == 1 and r.per_class["cat"]["fp"] == 1 and r.things.pq == 0.0
    assert math.isnan(r.stuff.pq) and r.to_dict()["stuff"]["pq"] is None


def test_panoptic_rejects_unlisted_ids_and_unmapped_categories():
    ids, segs = _scene()
    with pytest.raises(ValueError, match="no segment info"):
        PanopticQuality().add(ids, segs, ids, segs[:2])
    pq = PanopticQuality()
    pq.add(ids, segs, ids, segs)
    with pytest.raises(ValueError, match="dog"):
        pq.result({"sky": False})


def _boxes_image(n: int) -> tuple[list[Annotation], list[Segment]]:
    """n separate 10x10 squares on a 64x64 image, as ground truth and as perfect detections."""
    anns, segs = [], []
    for i in range(n):
        mask = np.zeros((64, 64), bool)
        mask[5:15, 5 + 14 * i : 15 + 14 * i] = True
        anns.append(Annotation.from_mask("dog", mask))
        segs.append(Segment("dog", 0.9 - 0.1 * i, mask, anns[-1].box, "conditional"))
    return anns, segs


def test_perfect_detections_give_ap_one_for_masks_and_boxes():
    anns, segs = _boxes_image(3)
    ap = CocoAP(["dog", "cat"])
    ap.add((64, 64), anns, segs)
    for iou_type in ("segm", "bbox"):
        r = ap.result(iou_type)
        assert (r.ap, r.ap50, r.ap75, r.ap_small) == (1.0, 1.0, 1.0, 1.0)
        assert math.isnan(r.ap_large) and r.to_dict()["ap_large"] is None  # no large objects at all


def test_one_missed_object_of_four_caps_ap_at_the_reached_recall_points():
    anns, segs = _boxes_image(4)
    ap = CocoAP(["dog"])
    ap.add((64, 64), anns, segs[:3])
    # precision 1 up to recall 3/4; COCO interpolates at 101 recall points 0, 0.01, ..., 0.75 -> 76 of them
    assert ap.result("segm").ap == pytest.approx(76 / 101)
    assert ap.result("bbox").ap50 == pytest.approx(76 / 101)


def test_ap_edge_cases():
    anns, _ = _boxes_image(2)
    ap = CocoAP(["dog"])
    ap.add((64, 64), anns, [])
    r = ap.result("segm")
    assert r.ap == 0.0 and math.isnan(r.ap_large)  # nothing detected; still no large ground truth
    box_only = CocoAP(["dog"])
    box_only.add((64, 64), [Annotation("dog", np.array([1, 1, 9, 9], np.float32))], [])
    with pytest.raises(ValueError, match="only a box"):
        box_only.result("segm")
    with pytest.raises(ValueError, match="'cow'"):
        CocoAP(["dog"]).add((64, 64), [Annotation("cow", np.zeros(4, np.float32))], [])


def test_miou_on_crafted_confusion():
    cm = ConfusionMatrix(["a", "b", "c", "d"])
    gt = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 2, 255]])
    pred = np.array([[0, 0, 0, 1, 1, 1, 1, 1, -1, 3]])
    cm.add(gt, pred)
    r = cm.result()
    # a: 3/4; b: 4/5; c: predicted "no class" -> 0/1; d: only on an ignored pixel -> absent, excluded
    assert r.per_class_iou == pytest.approx({"a": 0.75, "b": 0.8, "c": 0.0})
    assert r.miou == pytest.approx((0.75 + 0.8 + 0.0) / 3)
    assert r.pixel_accuracy == pytest.approx(7 / 9)
    assert r.num_classes == 3


def test_ciou_weights_by_area_while_mean_iou_weights_pairs():
    small_gt = np.zeros((10, 10), bool)
    small_gt[0, :10] = True
    small_pred = np.zeros((10, 10), bool)
    small_pred[0, 5:] = True
    small_pred[1, :5] = True  # 10 px, overlap 5 -> IoU 5/15
    big = np.ones((10, 10), bool)
    m = MaskIoU()
    assert m.add(small_gt, small_pred) == pytest.approx(1 / 3)
    assert m.add(big, big) == 1.0
    r = m.result()
    assert r.ciou == pytest.approx(105 / 115)
    assert r.miou == pytest.approx(2 / 3)
    assert r.precision_at_50 == 0.5 and r.num_pairs == 2
    empty = MaskIoU()
    assert empty.add(np.zeros((2, 2), bool), None) == 1.0  # correct empty answer


def test_matting_errors_average_over_images():
    m = MattingErrors()
    half = np.full((10, 10), 0.5)
    first = m.add(np.zeros((10, 10)), half)
    assert first["sad"] == pytest.approx(50 / 1000) and first["mse"] == pytest.approx(0.25)
    region = np.zeros((10, 10), bool)
    region[:2] = True  # only 20 pixels counted
    assert m.add(np.zeros((10, 10)), half, region)["sad"] == pytest.approx(10 / 1000)
    r = m.result()
    assert r.sad == pytest.approx(0.03) and r.mse == pytest.approx(0.25) and r.num_images == 2
    assert MattingErrors().result().to_dict()["sad"] is None
