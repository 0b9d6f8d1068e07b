"""`python -m qmn.evaluate`: a checkpoint (or a predictions file) + a labeled folder -> metrics JSON.

    python -m qmn.evaluate --data DIR --task instance --checkpoint model.safetensors --out metrics.json
    python -m qmn.evaluate --data DIR --task panoptic --predictions panoptic.json --out metrics.json

`evaluate_model` is the library entry the trainer calls for --eval-every and before/after metrics.
Both paths reduce to (ground-truth Sample, Prediction) pairs fed one image at a time to a `TaskEvaluator`,
so memory stays bounded and a predictions file is scored exactly as the live model would be.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence

import numpy as np
from tqdm import tqdm

from qmn.data.coco import load_json
from qmn.data.sample import TASKS, Sample, mask_to_box
from qmn.metrics import CocoAP, ConfusionMatrix, MaskIoU, PanopticQuality, SegmentInfo
from qmn.prompts import parse_prompts
from qmn.structures import Prediction

if TYPE_CHECKING:
    from qmn.predictor import Predictor

PRIMARY_METRIC = {
    "panoptic": "PQ",
    "instance": "mask_AP",
    "detection": "box_AP",
    "semantic": "mIoU",
    "referring": "cIoU",
    "foreground": "cIoU",
}


def referring_targets(sample: Sample) -> dict[str, np.ndarray]:
    """phrase -> (H, W) bool target: the union of the masks of every annotation that the phrase names.

    Phrases come from `Annotation.extra["phrases"]`, else the annotation's `text`; runs of whitespace become
    one space, as the model cleans its prompts, so predicted labels match.
    """
    height, width = sample.image.shape[:2]
    targets: dict[str, np.ndarray] = {}
    for ann in sample.annotations:
        mask = ann.mask if ann.mask is not None else np.zeros((height, width), bool)
        for phrase in (" ".join(p.split()) for p in ann.extra.get("phrases") or [ann.text]):
            targets[phrase] = targets.get(phrase, np.zeros((height, width), bool)) | mask
    return targets


def _union(masks: Iterable[Optional[np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    for mask in masks:
        if mask is not None:
            out |= mask
    return out


def _restricted(prediction: Prediction, categories: set[str]) -> Prediction:
    """The prediction without segments of classes outside `categories` (their panoptic pixels become void)."""
    outside = [s.id for s in prediction.segments if s.label not in categories]
    if not outside:
        return prediction
    panoptic = prediction.panoptic
    if panoptic is not None:
        panoptic = np.where(np.isin(panoptic, outside), 0, panoptic)
    kept = [s for s in prediction.segments if s.label in categories]
    return dataclasses.replace(prediction, segments=kept, panoptic=panoptic)


class TaskEvaluator:
    """Accumulates one task's metrics from (Sample, Prediction) pairs, one image at a time.

    `categories`: the evaluated class names (ground truth and predictions of other classes are left out,
    as COCOeval does with a category subset); `isthing`: name -> is a thing, needed for panoptic only.
    """

    def __init__(self, task: str, categories: Sequence[str], isthing: Optional[dict[str, bool]] = None) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        self.task = task
        self.categories = list(dict.fromkeys(categories))
        self.isthing = isthing if isthing is not None else {c: True for c in self.categories}
        self.num_images = 0
        self._panoptic = PanopticQuality()
        self._ap = CocoAP(self.categories)
        self._confusion = ConfusionMatrix(self.categories)
        self._iou = MaskIoU()

    def add(self, sample: Sample, prediction: Prediction) -> None:
        """Score one image's prediction against its sample."""
        shape = sample.image.shape[:2]
        if prediction.image_size not in ((0, 0), tuple(shape)):
            raise ValueError(f"prediction for {sample.image_id!r} has size {prediction.image_size}, image is {shape}")
        known = set(self.categories)
        annotations = [a for a in sample.annotations if a.text in known]
        if self.task not in ("referring", "foreground"):
            prediction = _restricted(prediction, known)
        if self.task == "panoptic":
            self._add_panoptic(sample, annotations, prediction)
        elif self.task in ("instance", "detection"):
            self._ap.add(shape, annotations, prediction.segments)
        elif self.task == "semantic":
            self._confusion.add(self._semantic_ground_truth(shape, annotations), self._semantic_prediction(shape, prediction))
        elif self.task == "referring":
            for phrase, target in referring_targets(sample).items():
                self._iou.add(target, _union((s.mask for s in prediction.segments if s.label == phrase), shape))
        else:  # foreground: IoU of the union of all objects
            self._iou.add(_union((a.mask for a in sample.annotations), shape), _union((s.mask for s in prediction.segments), shape))
        self.num_images += 1

    def _add_panoptic(self, sample: Sample, annotations: list, prediction: Prediction) -> None:
        shape = sample.image.shape[:2]
        gt_map = np.zeros(shape, np.int32)
        gt_info = []
        for i, ann in enumerate(annotations, start=1):  # later annotations win overlaps, as a painter
            if ann.mask is None:
                raise ValueError(f"panoptic ground truth of {sample.image_id!r} has a box-only annotation ({ann.text!r})")
            gt_map[ann.mask] = i
            gt_info.append(SegmentInfo(i, ann.text, ann.iscrowd))
        if prediction.panoptic is not None:
            pred_map = prediction.panoptic
            pred_info = [SegmentInfo(s.id, s.label) for s in prediction.segments]
        else:  # paint by increasing score so the most confident segment wins each pixel
            pred_map = np.zeros(shape, np.int32)
            pred_info = []
            order = sorted(range(len(prediction.segments)), key=lambda k: prediction.segments[k].score)
            for new_id, k in enumerate(order, start=1):
                seg = prediction.segments[k]
                if seg.mask is not None:
                    pred_map[seg.mask] = new_id
                    pred_info.append(SegmentInfo(new_id, seg.label))
        self._panoptic.add(gt_map, gt_info, pred_map, pred_info)

    def _semantic_ground_truth(self, shape: tuple[int, int], annotations: list) -> np.ndarray:
        """(H, W) class index per pixel, -1 where no annotation covers it (ignored)."""
        label_map = np.full(shape, -1, np.int64)
        for ann in annotations:
            if ann.mask is not None:
                label_map[ann.mask] = self.categories.index(ann.text)
        return label_map

    def _semantic_prediction(self, shape: tuple[int, int], prediction: Prediction) -> np.ndarray:
        """(H, W) class index per pixel in `self.categories` order, -1 = no class."""
        if prediction.semantic is not None:  # indexes into prediction.prompts: remap to our categories
            lookup = np.array([self.categories.index(p) if p in self.categories else -1 for p in prediction.prompts] + [-1])
            return lookup[np.where(prediction.semantic < 0, len(prediction.prompts), prediction.semantic)]
        label_map = np.full(shape, -1, np.int64)
        for seg in sorted(prediction.segments, key=lambda s: s.score):
            if seg.mask is not None and seg.label in self.categories:
                label_map[seg.mask] = self.categories.index(seg.label)
        return label_map

    def result(self) -> dict:
        """{"task", "num_images", "primary", "metrics": {name: value}, "details": {...}}; None = undefined."""
        details: dict = {}
        if self.task == "panoptic":
            r = self._panoptic.result(self.isthing).to_dict()
            metrics = {}
            for group, suffix in (("all", ""), ("things", "_things"), ("stuff", "_stuff")):
                metrics.update({f"{k.upper()}{suffix}": r[group][k] for k in ("pq", "sq", "rq")})
            details = {"per_class": r["per_class"], "num_classes": {g: r[g]["n"] for g in ("all", "things", "stuff")}}
        elif self.task in ("instance", "detection"):
            metrics = {}
            for iou_type, prefix in (("segm", "mask"), ("bbox", "box")):
                if iou_type == "segm" and self.task == "detection":
                    continue
                r = self._ap.result(iou_type).to_dict()
                names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
                metrics.update({f"{prefix}_{n}": v for n, v in zip(names, r.values())})
        elif self.task == "semantic":
            r = self._confusion.result().to_dict()
            metrics = {"mIoU": r["miou"], "pixel_accuracy": r["pixel_accuracy"]}
            details = {"per_class_iou": r["per_class_iou"], "num_classes": r["num_classes"]}
        else:
            r = self._iou.result().to_dict()
            metrics = {"cIoU": r["ciou"], "mIoU": r["miou"], "precision@0.5": r["precision_at_50"]}
            details = {"num_pairs": r["num_pairs"]}
        return {
            "task": self.task,
            "num_images": self.num_images,
            "primary": PRIMARY_METRIC[self.task],
            "metrics": metrics,
            "details": details,
        }


def thing_stuff_split(dataset, categories: Sequence[str]) -> tuple[dict[str, bool], str]:
    """name -> is a thing, and where that came from.

    Sources, in order: the dataset's panoptic categories (`dataset.thing_classes`, from `isthing`),
    `dataset.json`'s "things" / "stuff" lists in the dataset folder, else every class is a thing
    (PQ_stuff is then undefined).
    """
    thing_classes = getattr(dataset, "thing_classes", None)
    if thing_classes is not None:
        things = set(thing_classes)
        return {c: c in things for c in categories}, "from the dataset's panoptic categories (isthing)"
    root = getattr(dataset, "root", None)
    spec_path = Path(root) / "dataset.json" if root is not None else None
    if spec_path is not None and spec_path.is_file():
        spec = load_json(spec_path)
        if isinstance(spec, dict) and ("things" in spec or "stuff" in spec):
            for key in ("things", "stuff"):
                if not isinstance(spec.get(key, []), list):
                    raise ValueError(f"{spec_path}: field {key!r} must be a list of class names")
            if "things" in spec:
                things = set(spec["things"])
                return {c: c in things for c in categories}, f"from {spec_path}"
            stuff = set(spec["stuff"])
            return {c: c not in stuff for c in categories}, f"from {spec_path}"
    return {c: True for c in categories}, "unknown (no isthing, no dataset.json things/stuff): every class treated as a thing"


def _dataset_categories(dataset, prompts: Optional[Sequence[str]]) -> list[str]:
    if prompts:
        return [p.strip() for p in prompts if p.strip()]
    return list(dataset.vocabulary)


def _make_evaluator(dataset, task: str, categories: list[str]) -> tuple[TaskEvaluator, list[str]]:
    notes = []
    isthing = None
    if task == "panoptic":
        isthing, source = thing_stuff_split(dataset, categories)
        notes.append(f"thing/stuff split {source}")
    return TaskEvaluator(task, categories, isthing), notes


def _readable_samples(dataset, task: str, max_images: Optional[int], progress: bool, skipped: list[str]) -> Iterator[Sample]:
    """The first `max_images` samples with a progress bar; images that fail to decode go to `skipped`."""
    from qmn.data.image_io import ImageError

    skipped.extend(getattr(dataset, "skipped", []))
    image_ids = getattr(dataset, "image_ids", None)
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    for index in tqdm(range(count), desc=f"evaluate {task}", unit="img", disable=not progress):
        try:
            yield dataset[index]
        except ImageError:
            skipped.append(image_ids[index] if image_ids is not None else f"#{index}")


def _finish(evaluator: TaskEvaluator, notes: list[str], skipped: list[str], started: float) -> dict:
    result = evaluator.result()
    result["notes"] = notes
    result["skipped_images"] = skipped
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def default_threshold(task: str) -> Optional[float]:
    """AP is a ranking metric: keep every top-100 detection (COCO protocol); the other tasks use the model's own
    calibrated `score_threshold` (None)."""
    return 0.0 if task in ("instance", "detection") else None


def evaluate_model(
    predictor: "Predictor",
    dataset: Sequence[Sample],
    task: str,
    max_images: Optional[int] = None,
    prompts: Optional[Sequence[str]] = None,
    threshold: Optional[float] = None,
    progress: bool = True,
) -> dict:
    """Run `predictor.predict` (a `qmn.predictor.Predictor`, or anything with its `predict`) on the first `max_images` samples of `dataset` and score them for `task`.

    Prompts: `prompts` if given, else the dataset's vocabulary; for referring, each image's own phrases.
    Returns `TaskEvaluator.result()` plus "notes", "skipped_images" and "seconds".
    """
    started = time.perf_counter()
    categories = _dataset_categories(dataset, prompts)
    evaluator, notes = _make_evaluator(dataset, task, categories)
    skipped: list[str] = []
    for sample in _readable_samples(dataset, task, max_images, progress, skipped):
        image_prompts = list(referring_targets(sample)) if task == "referring" else categories
        if task == "referring" and not image_prompts:  # nothing referred to in this image: nothing to score
            prediction = Prediction(task, [], [], image_size=sample.image.shape[:2])
        else:
            prediction = predictor.predict(sample.image, [] if task == "foreground" else image_prompts, task,
                                       threshold=default_threshold(task) if threshold is None else threshold)
        evaluator.add(sample, prediction)
    return _finish(evaluator, notes, skipped, started)


def evaluate_predictions(
    predictions_path: str | Path,
    dataset: Sequence[Sample],
    task: str,
    max_images: Optional[int] = None,
    prompts: Optional[Sequence[str]] = None,
    panoptic_dir: Optional[str | Path] = None,
    reference: Optional[str | Path] = None,
    progress: bool = True,
) -> dict:
    """Score a predictions file (COCO JSON / results list, or COCO panoptic JSON + PNG folder) against `dataset`."""
    started = time.perf_counter()
    categories = _dataset_categories(dataset, prompts)
    evaluator, notes = _make_evaluator(dataset, task, categories)
    predictions = PredictionsFile(predictions_path, task, panoptic_dir=panoptic_dir, reference=reference)
    skipped: list[str] = []
    for sample in _readable_samples(dataset, task, max_images, progress, skipped):
        evaluator.add(sample, predictions.prediction_for(sample))
    notes.extend(predictions.notes())
    return _finish(evaluator, notes, skipped, started)


def _image_key(file_name: str) -> str:
    """Match predictions to images by path without extension (panoptic PNGs are named after the JPEGs)."""
    return Path(file_name).with_suffix("").as_posix()


class PredictionsFile:
    """Predictions on disk, served image by image as `Prediction` objects.

    Accepted: a COCO JSON with "images" / "categories" / "annotations" (+ "score"; what `qmn.predict` writes);
    a bare COCO results list, whose integer image / category ids are resolved through `reference` (a COCO
    JSON, normally the ground-truth annotations; string image ids are file names); or, for panoptic, a COCO
    panoptic JSON whose PNGs lie in `panoptic_dir` (default: the JSON's stem folder, else "panoptic/" beside it).
    Referring entries carry their phrase in "sentence".
    """

    def __init__(self, path: str | Path, task: str, panoptic_dir=None, reference=None) -> None:
        self.path, self.task = Path(path), task
        data = load_json(self.path)
        self._served: set[str] = set()
        if isinstance(data, list):
            if reference is None:
                raise ValueError(f"{self.path}: a bare COCO results list needs --reference (a COCO JSON with images)")
            ref = load_json(Path(reference))
            images, categories, annotations = ref.get("images", []), ref.get("categories", []), data
        elif isinstance(data, dict) and "annotations" in data:
            images, categories, annotations = data.get("images", []), data.get("categories", []), data["annotations"]
        else:
            raise ValueError(f"{self.path}: expected a COCO JSON object with 'annotations' or a COCO results list")
        self._file_names = {img["id"]: img["file_name"] for img in images if "id" in img and "file_name" in img}
        self._category_names = {c["id"]: c["name"] for c in categories if "id" in c and "name" in c}
        self._panoptic = bool(annotations) and isinstance(annotations[0], dict) and "segments_info" in annotations[0]
        if task == "panoptic" and annotations and not self._panoptic:
            raise ValueError(f"{self.path}: task panoptic needs a COCO panoptic JSON (annotations with 'segments_info')")
        if self._panoptic:
            self._png_dir = self._find_png_dir(panoptic_dir)
        self._by_image: dict[str, list[dict]] = {}
        for i, ann in enumerate(annotations):
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise ValueError(f"{self.path}: annotations[{i}] has no 'image_id'")
            self._by_image.setdefault(_image_key(self._file_name(ann, i)), []).append(ann)

    def _find_png_dir(self, panoptic_dir) -> Path:
        candidates = [Path(panoptic_dir)] if panoptic_dir else [self.path.with_suffix(""), self.path.parent / "panoptic"]
        for candidate in candidates:
            if candidate.is_dir():
                return candidate
        raise ValueError(f"{self.path}: panoptic PNG folder not found (tried {', '.join(map(str, candidates))})")

    def _file_name(self, ann: dict, index: int) -> str:
        image_id = ann["image_id"]
        if image_id in self._file_names:
            return self._file_names[image_id]
        if isinstance(image_id, str):
            return image_id
        if self._panoptic and "file_name" in ann:
            return ann["file_name"]
        raise ValueError(f"{self.path}: annotations[{index}] image_id {image_id!r} is not among the listed images")

    def _category(self, ann: dict) -> str:
        if self.task == "referring":  # a results list's "sentence", or RefCOCO "sentences" as qmn.predict writes
            sentences = ann.get("sentences") or []
            sentence = ann.get("sentence") or (sentences[0].get("sent") if sentences and isinstance(sentences[0], dict) else None)
            if not isinstance(sentence, str):
                raise ValueError(f"{self.path}: a referring result for image {ann['image_id']!r} has no 'sentence'")
            return sentence
        category_id = ann.get("category_id")
        if category_id not in self._category_names:
            raise ValueError(f"{self.path}: category_id {category_id!r} is not among the listed categories")
        return self._category_names[category_id]

    def prediction_for(self, sample: Sample) -> Prediction:
        """The prediction for `sample` (matched by file name without extension); empty if none was made."""
        from qmn.data.mask_codec import decode_rle, polygons_to_mask
        from qmn.structures import Segment

        height, width = sample.image.shape[:2]
        key = _image_key(sample.image_id)
        self._served.add(key)
        entries = self._by_image.get(key, [])
        if self._panoptic:
            return self._panoptic_prediction(entries, (height, width))
        segments = []
        for ann in entries:
            mask = None
            segmentation = ann.get("segmentation")
            if self.task != "detection" and isinstance(segmentation, dict):
                mask = decode_rle(segmentation, height, width)
            elif self.task != "detection" and isinstance(segmentation, list):
                mask = polygons_to_mask(segmentation, height, width)
            elif self.task != "detection":
                raise ValueError(f"{self.path}: a result for {sample.image_id!r} has no 'segmentation' (task {self.task})")
            if "bbox" in ann:
                x, y, w, h = (float(v) for v in ann["bbox"])
                box = np.array([x, y, x + w, y + h], np.float32)
            elif mask is not None:
                box = mask_to_box(mask)
            else:
                raise ValueError(f"{self.path}: a detection result for {sample.image_id!r} has no 'bbox'")
            label = self._category(ann)
            segments.append(Segment(label, float(ann.get("score", 1.0)), mask, box, ann.get("query_type", "unknown")))
        return Prediction(self.task, [], segments, image_size=(height, width))

    def _panoptic_prediction(self, entries: list[dict], shape: tuple[int, int]) -> Prediction:
        from qmn.data.coco_panoptic import rgb_to_id
        from qmn.data.image_io import read_image
        from qmn.structures import Segment

        if not entries:
            return Prediction(self.task, [], [], panoptic=np.zeros(shape, np.int32), image_size=shape)
        ann = entries[0]
        png = self._png_dir / ann.get("file_name", "")
        panoptic = rgb_to_id(read_image(png)).astype(np.int32)  # (H, W, 3) -> (H, W) ids
        if panoptic.shape != shape:
            raise ValueError(f"{png}: size {panoptic.shape} differs from its image {shape}")
        segments = [
            Segment(self._category(s), float(s.get("score", 1.0)), None, np.zeros(4, np.float32), "unknown", id=int(s["id"]))
            for s in ann.get("segments_info", [])
        ]
        return Prediction(self.task, [], segments, panoptic=panoptic, image_size=shape)

    def notes(self) -> list[str]:
        unused = sorted(set(self._by_image) - self._served)
        return [f"{len(unused)} predicted images are not in the evaluated set, e.g. {unused[0]!r}"] if unused else []


# ------------------------------------------------------------------------------------------------ CLI


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the module docstring (examples, layout) kept as written."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qmn.evaluate",
        description="Score a checkpoint, or a predictions file, on a labeled folder; writes a metrics JSON "
        "(panoptic: PQ/SQ/RQ all/things/stuff; instance: mask+box AP; detection: box AP; semantic: mIoU; "
        "referring and foreground: cIoU, mIoU).",
        epilog=__doc__,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="labeled dataset folder (any format qmn.data reads)")
    parser.add_argument("--task", choices=TASKS, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="model .safetensors file to run on every image")
    source.add_argument("--predictions", type=Path, help="COCO JSON / results list, or COCO panoptic JSON")
    parser.add_argument("--panoptic-dir", type=Path, help="PNG folder of a panoptic --predictions file")
    parser.add_argument("--reference", type=Path, help="COCO JSON resolving the ids of a bare results list")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--prompts", default="", help="comma-separated classes to evaluate; empty = the dataset's vocabulary")
    parser.add_argument("--max-images", type=int, help="evaluate only the first N images")
    parser.add_argument("--threshold", type=float, default=None,
                        help="minimum segment score (with --checkpoint); default 0 for instance / detection (AP ranks "
                             "the top 100 detections, as COCO does) and the model's score_threshold otherwise")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from qmn.data import load_dataset
        from qmn.io_utils import atomic_write_json

        dataset = load_dataset(args.data, task=args.task)
        prompts = parse_prompts(args.prompts, args.task) or None
        if args.checkpoint is not None:
            from qmn import Predictor, load_model

            predictor = Predictor(load_model(args.checkpoint, device=args.device))
            result = evaluate_model(predictor, dataset, args.task, args.max_images, prompts, threshold=args.threshold)
            result["checkpoint"] = str(args.checkpoint)
        else:
            result = evaluate_predictions(
                args.predictions, dataset, args.task, args.max_images, prompts, args.panoptic_dir, args.reference
            )
            result["predictions"] = str(args.predictions)
        result["data"] = str(args.data)
        atomic_write_json(args.out, result, indent=2)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    headline = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result["metrics"].items())
    print(f"{args.task} on {result['num_images']} images: {headline} -> {args.out}")
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
