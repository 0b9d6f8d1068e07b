"""Segmentation metrics computed the standard ways, so our numbers compare with published ones.

- Panoptic quality as panopticapi's `pq_compute` (match IoU > 0.5, void and crowd regions forgiven).
- Mask / box AP through pycocotools' COCOeval (AP, AP50, AP75, APs/m/l).
- Semantic mIoU from a confusion matrix (classes absent from both ground truth and prediction excluded).
- Referring / foreground cIoU (cumulative intersection over cumulative union) and mean per-pair IoU.
- Matting SAD / MSE / Grad / Conn averaged over images (the per-image errors are `qmn.matting.metrics`).

Every metric is an accumulator fed one image at a time, so evaluating a large set keeps memory bounded;
`result()` returns a small dataclass whose `to_dict()` is JSON-ready (undefined values become None).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from qmn.data.mask_codec import encode_rle
from qmn.data.sample import Annotation
from qmn.structures import Segment

VOID = 0  # segment id of unlabeled pixels in a panoptic id map
_PAIR_OFFSET = 1 << 32  # gt_id * offset + pred_id encodes an overlap pair in one int64


def _json_ready(value):
    """NaN (an undefined metric, e.g. PQ of stuff when there is no stuff) -> None; recurse into containers."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


class _Result:
    def to_dict(self) -> dict:
        return _json_ready(dataclasses.asdict(self))


# ----------------------------------------------------------------------------------------------- panoptic


@dataclass
class SegmentInfo:
    """One segment of a panoptic id map: its id in the map, its category name, crowd flag (ground truth only)."""

    id: int
    category: str
    iscrowd: bool = False


@dataclass
class PQStats(_Result):
    pq: float
    sq: float
    rq: float
    n: int  # categories averaged (those with TP + FP + FN > 0)


@dataclass
class PanopticResult(_Result):
    all: PQStats
    things: PQStats
    stuff: PQStats
    per_class: dict  # category -> {"pq", "sq", "rq", "tp", "fp", "fn"}


class PanopticQuality:
    """panopticapi's per-category TP / FP / FN / IoU sums, accumulated image by image."""

    def __init__(self) -> None:
        self._iou: dict[str, float] = defaultdict(float)
        self._tp: dict[str, int] = defaultdict(int)
        self._fp: dict[str, int] = defaultdict(int)
        self._fn: dict[str, int] = defaultdict(int)

    def add(
        self,
        gt_map: np.ndarray,
        gt_segments: Sequence[SegmentInfo],
        pred_map: np.ndarray,
        pred_segments: Sequence[SegmentInfo],
    ) -> None:
        """Add one image: (H, W) integer id maps (0 = void) and the segments they contain.

        Segments listed but absent from their map are ignored; map ids with no listed segment are an error.
        """
        if gt_map.shape != pred_map.shape:
            raise ValueError(f"panoptic maps differ in shape: ground truth {gt_map.shape}, prediction {pred_map.shape}")
        gt_ids, gt_areas = np.unique(gt_map, return_counts=True)
        pred_ids, pred_areas = np.unique(pred_map, return_counts=True)
        gt_info = _present_segments(gt_segments, dict(zip(gt_ids.tolist(), gt_areas.tolist())), "ground truth")
        pred_info = _present_segments(pred_segments, dict(zip(pred_ids.tolist(), pred_areas.tolist())), "prediction")
        pairs, pair_counts = np.unique(
            gt_map.astype(np.int64).ravel() * _PAIR_OFFSET + pred_map.astype(np.int64).ravel(), return_counts=True
        )
        overlap = {(int(p // _PAIR_OFFSET), int(p % _PAIR_OFFSET)): int(c) for p, c in zip(pairs, pair_counts)}

        matched_gt, matched_pred = set(), set()
        for (gt_id, pred_id), intersection in overlap.items():
            if gt_id not in gt_info or pred_id not in pred_info:
                continue
            gt, gt_area = gt_info[gt_id]
            pred, pred_area = pred_info[pred_id]
            if gt.iscrowd or gt.category != pred.category:
                continue
            union = pred_area + gt_area - intersection - overlap.get((VOID, pred_id), 0)
            iou = intersection / union
            if iou > 0.5:  # at most one match per segment is possible above 0.5
                self._tp[gt.category] += 1
                self._iou[gt.category] += iou
                matched_gt.add(gt_id)
                matched_pred.add(pred_id)

        crowd_by_category = {}
        for gt_id, (gt, _) in gt_info.items():
            if gt.iscrowd:
                crowd_by_category[gt.category] = gt_id
            elif gt_id not in matched_gt:
                self._fn[gt.category] += 1
        for pred_id, (pred, pred_area) in pred_info.items():
            if pred_id in matched_pred:
                continue
            forgiven = overlap.get((VOID, pred_id), 0)
            if pred.category in crowd_by_category:
                forgiven += overlap.get((crowd_by_category[pred.category], pred_id), 0)
            if forgiven / pred_area > 0.5:  # mostly on void or a same-class crowd: not a false positive
                continue
            self._fp[pred.category] += 1

    def result(self, isthing: Mapping[str, bool]) -> PanopticResult:
        """Average over the categories of `isthing` (name -> is a thing) that occurred, as panopticapi."""
        unknown = sorted((set(self._tp) | set(self._fp) | set(self._fn)) - set(isthing))
        if unknown:
            raise ValueError(f"categories missing from the thing/stuff mapping: {', '.join(unknown)}")
        per_class = {}
        for category in isthing:
            tp, fp, fn = self._tp[category], self._fp[category], self._fn[category]
            if tp + fp + fn == 0:
                continue
            denominator = tp + 0.5 * fp + 0.5 * fn
            per_class[category] = {
                "pq": self._iou[category] / denominator,
                "sq": self._iou[category] / tp if tp else 0.0,
                "rq": tp / denominator,
                "tp": tp,
                "fp": fp,
                "fn": fn,
            }

        def average(selected: list[str]) -> PQStats:
            if not selected:
                return PQStats(math.nan, math.nan, math.nan, 0)
            mean = {k: float(np.mean([per_class[c][k] for c in selected])) for k in ("pq", "sq", "rq")}
            return PQStats(n=len(selected), **mean)

        return PanopticResult(
            all=average(list(per_class)),
            things=average([c for c in per_class if isthing[c]]),
            stuff=average([c for c in per_class if not isthing[c]]),
            per_class=per_class,
        )


def _present_segments(
    segments: Sequence[SegmentInfo], areas: dict[int, int], side: str
) -> dict[int, tuple[SegmentInfo, int]]:
    """id -> (segment, pixel area) for the listed segments that have pixels; unlisted non-void ids are an error."""
    by_id = {s.id: s for s in segments}
    missing = sorted(i for i in areas if i != VOID and i not in by_id)
    if missing:
        raise ValueError(f"{side} panoptic map has segment ids with no segment info: {missing[:10]}")
    return {i: (s, areas[i]) for i, s in by_id.items() if i != VOID and i in areas}


# ----------------------------------------------------------------------------------------------- COCO AP


@dataclass
class APResult(_Result):
    """COCOeval's first six stats in percent-free [0, 1]; NaN where COCOeval reports -1 (no ground truth)."""

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float


def _xywh(box_xyxy: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return [x1, y1, x2 - x1, y2 - y1]


class CocoAP:
    """Ground truth and detections kept as compressed RLE / boxes per image, evaluated by pycocotools COCOeval.

    Detections carry their own area (mask pixels for mask AP, box area for box AP), which COCOeval uses to
    ignore unmatched detections outside an area range, as loadRes would set it.
    """

    def __init__(self, categories: Sequence[str]) -> None:
        self.category_ids = {name: i + 1 for i, name in enumerate(categories)}
        self._images: list[dict] = []
        self._gt: list[dict] = []
        self._mask_detections: list[dict] = []
        self._box_detections: list[dict] = []
        self._gt_without_mask = 0

    def add(self, image_size: tuple[int, int], ground_truth: Sequence[Annotation], detections: Sequence[Segment]) -> None:
        """Add one image of size (H, W): its annotations and the predicted segments (label, score, mask, box)."""
        image_id = len(self._images) + 1
        height, width = image_size
        self._images.append({"id": image_id, "height": int(height), "width": int(width)})
        for ann in ground_truth:
            record = {
                "id": len(self._gt) + 1,
                "image_id": image_id,
                "category_id": self._category_id(ann.text, "ground truth"),
                "bbox": _xywh(ann.box),
                "iscrowd": int(ann.iscrowd),
            }
            if ann.mask is not None:
                record["segmentation"] = encode_rle(ann.mask)
                record["area"] = float(ann.mask.sum())
            else:
                self._gt_without_mask += 1
                record["area"] = record["bbox"][2] * record["bbox"][3]
            self._gt.append(record)
        for seg in detections:
            base = {"image_id": image_id, "category_id": self._category_id(seg.label, "prediction"), "score": float(seg.score)}
            bbox = _xywh(seg.box)
            self._box_detections.append({**base, "id": len(self._box_detections) + 1, "bbox": bbox, "area": bbox[2] * bbox[3]})
            if seg.mask is not None:
                self._mask_detections.append(
                    {**base, "id": len(self._mask_detections) + 1, "segmentation": encode_rle(seg.mask),
                     "bbox": bbox, "area": float(seg.mask.sum())}
                )

    def _category_id(self, name: str, side: str) -> int:
        if name not in self.category_ids:
            raise ValueError(f"{side} category {name!r} is not in the evaluated categories")
        return self.category_ids[name]

    def result(self, iou_type: str) -> APResult:
        """`iou_type` "segm" (mask AP) or "bbox" (box AP)."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if iou_type not in ("segm", "bbox"):
            raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
        if iou_type == "segm" and self._gt_without_mask:
            raise ValueError(
                f"mask AP needs ground-truth masks; {self._gt_without_mask} annotations have only a box (use box AP)"
            )
        if not self._images:
            return APResult(*[math.nan] * 6)
        categories = [{"id": i, "name": n} for n, i in self.category_ids.items()]
        gt, dt = COCO(), COCO()  # built directly (not loadRes, which refuses an empty detection list)
        gt.dataset = {"images": self._images, "annotations": self._gt, "categories": categories}
        detections = self._mask_detections if iou_type == "segm" else self._box_detections
        dt.dataset = {"images": self._images, "annotations": detections, "categories": categories}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
            gt.createIndex()
            dt.createIndex()
            evaluator = COCOeval(gt, dt, iouType=iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = [float(s) if s >= 0 else math.nan for s in evaluator.stats[:6]]
        return APResult(*stats)


# ----------------------------------------------------------------------------------------------- semantic


@dataclass
class SemanticResult(_Result):
    miou: float
    pixel_accuracy: float
    per_class_iou: dict  # class -> IoU, only classes present in ground truth or prediction
    num_classes: int  # classes averaged


class ConfusionMatrix:
    """Pixel confusion matrix over K classes plus a "no class" column for unlabeled predictions."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        k = len(self.classes)
        self.matrix = np.zeros((k + 1, k + 1), np.int64)  # rows ground truth, columns prediction; index k = none

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """(H, W) class indices; ground truth outside [0, K) is ignored, prediction outside it means "no class"."""
        if gt.shape != pred.shape:
            raise ValueError(f"label maps differ in shape: ground truth {gt.shape}, prediction {pred.shape}")
        k = len(self.classes)
        gt = gt.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        keep = (gt >= 0) & (gt < k)
        gt, pred = gt[keep], pred[keep]
        pred = np.where((pred >= 0) & (pred < k), pred, k)
        self.matrix += np.bincount(gt * (k + 1) + pred, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)

    def result(self) -> SemanticResult:
        k = len(self.classes)
        intersection = np.diag(self.matrix)[:k]
        gt_total = self.matrix[:k].sum(axis=1)
        pred_total = self.matrix[:, :k].sum(axis=0)
        union = gt_total + pred_total - intersection
        present = union > 0
        ious = {self.classes[i]: float(intersection[i] / union[i]) for i in np.flatnonzero(present)}
        labeled = self.matrix[:k].sum()
        return SemanticResult(
            miou=float(np.mean(list(ious.values()))) if ious else math.nan,
            pixel_accuracy=float(intersection.sum() / labeled) if labeled else math.nan,
            per_class_iou=ious,
            num_classes=len(ious),
        )


# ----------------------------------------------------------------------------------------------- mask IoU


@dataclass
class IoUResult(_Result):
    ciou: float  # cumulative intersection / cumulative union over all pairs
    miou: float  # mean of per-pair IoU
    precision_at_50: float  # fraction of pairs with IoU > 0.5
    num_pairs: int


class MaskIoU:
    """Referring (one pair per phrase) and foreground (one pair per image) IoU; running sums only.

    A pair where both masks are empty is a correct empty answer and counts as IoU 1.
    """

    def __init__(self) -> None:
        self.intersection = 0
        self.union = 0
        self._iou_sum = 0.0
        self._hits = 0
        self.num_pairs = 0

    def add(self, gt: np.ndarray, pred: Optional[np.ndarray]) -> float:
        """Add one (H, W) bool pair (`pred` None = nothing predicted); returns its IoU."""
        gt = gt.astype(bool)
        pred = np.zeros_like(gt) if pred is None else pred.astype(bool)
        if gt.shape != pred.shape:
            raise ValueError(f"masks differ in shape: ground truth {gt.shape}, prediction {pred.shape}")
        intersection = int(np.count_nonzero(gt & pred))
        union = int(np.count_nonzero(gt | pred))
        iou = intersection / union if union else 1.0
        self.intersection += intersection
        self.union += union
        self._iou_sum += iou
        self._hits += iou > 0.5
        self.num_pairs += 1
        return iou

    def result(self) -> IoUResult:
        if not self.num_pairs:
            return IoUResult(math.nan, math.nan, math.nan, 0)
        return IoUResult(
            ciou=self.intersection / self.union if self.union else 1.0,
            miou=self._iou_sum / self.num_pairs,
            precision_at_50=self._hits / self.num_pairs,
            num_pairs=self.num_pairs,
        )


# ----------------------------------------------------------------------------------------------- matting


@dataclass
class MattingResult(_Result):
    """Per-image matting errors averaged over images (SAD, Grad, Conn in thousands, as benchmarks print them)."""

    sad: float
    mse: float
    grad: float
    conn: float
    num_images: int


class MattingErrors:
    """Mean of `qmn.matting.metrics.matting_errors` over images, each over its `region` (the unknown band)."""

    def __init__(self) -> None:
        self._sums = {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}
        self.num_images = 0

    def add(self, pred: np.ndarray, gt: np.ndarray, region: Optional[np.ndarray] = None) -> dict[str, float]:
        """Add one image's (H, W) alphas in [0, 1]; returns its errors."""
        from qmn.matting.metrics import matting_errors

        errors = matting_errors(pred, gt, region)
        for name in self._sums:
            self._sums[name] += errors[name]
        self.num_images += 1
        return errors

    def result(self) -> MattingResult:
        n = self.num_images
        means = {k: v / n if n else math.nan for k, v in self._sums.items()}
        return MattingResult(num_images=n, **means)
