"""`load_dataset`: any labeled folder the product accepts, as one lazy Sequence[Sample].

Public API:
    load_dataset(path, task=None, *, max_pixels=DEFAULT_MAX_PIXELS) -> Dataset
    Dataset: len / [i] / iteration give Samples (images decoded on access); attributes
        vocabulary, task, image_ids, root, skipped, format, thing_classes (panoptic only, else None)
    FORMATS

Layouts recognised under `path` (a folder; a COCO JSON file also works, with images/ beside it):
    coco           images/ + annotations.json (or instances*.json)           task instance
                   (referring when annotations carry `sentences`/`captions`; detection when boxes only)
    coco-panoptic  images/ + panoptic*.json + the PNG folder of the same stem  task panoptic
    yolo-seg       images/ + labels/*.txt + classes.txt                      task instance
    semantic       images/ + labels/*.png + classes.txt                      task semantic
An optional `dataset.json` ({"format": ..., "task": ..., "annotations": ..., "images": ...}) names
the format, task, JSON file and (COCO formats) image folder instead. `task` converts the labels: semantic merges
each class's masks, foreground merges everything, detection drops masks, referring keeps the
annotations with phrases (text = first phrase).

Images are checked (header only) when loading: missing, unreadable or over-size files and images
whose size differs from their labels are listed in `skipped` (with a warning naming the count),
never a crash. A file that passes the header but fails to decode raises ImageError when accessed.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import Optional, Protocol, Union

import numpy as np
from tqdm import tqdm

from qmn.data.coco import field, load_json, read_coco_instances
from qmn.data.coco_panoptic import read_coco_panoptic
from qmn.data.image_io import DEFAULT_MAX_PIXELS, image_size, read_image
from qmn.data.sample import TASKS, Annotation, Sample, mask_to_box
from qmn.data.semantic_folder import read_semantic_folder
from qmn.data.yolo import read_yolo_seg
from qmn.io_utils import safe_join

FORMATS = ("coco", "coco-panoptic", "yolo-seg", "semantic")
_SHOWN_SKIPS = 3


class LabelSource(Protocol):
    """What each format's reader returns (CocoInstances, CocoPanoptic, YoloSeg, SemanticFolder)."""

    image_dir: Path
    image_ids: list[str]
    vocabulary: list[str]
    task: str
    skipped: list[tuple[str, str]]
    thing_classes: Optional[list[str]]

    def expected_size(self, index: int) -> Optional[tuple[int, int]]: ...

    def annotations(self, index: int, height: int, width: int) -> list[Annotation]: ...


class Dataset(SequenceABC):
    """Lazy Sequence[Sample] over a label source; picklable, so DataLoader workers can use it."""

    def __init__(self, source: LabelSource, root: Path, format: str, task: str, max_pixels: int) -> None:
        self.source, self.root, self.format, self.task, self.max_pixels = source, root, format, task, max_pixels
        self.thing_classes = source.thing_classes
        self.vocabulary = ["foreground"] if task == "foreground" else list(source.vocabulary)
        self._indices, reasons = [], list(source.skipped)
        checks = tqdm(range(len(source.image_ids)), desc="checking images", unit="img", disable=len(source.image_ids) < 500)
        for index in checks:
            reason = self._problem(index)
            if reason is None:
                self._indices.append(index)
            else:
                reasons.append((source.image_ids[index], reason))
        self.image_ids = [source.image_ids[i] for i in self._indices]
        self.skipped = [image_id for image_id, _ in reasons]
        if reasons:
            shown = "; ".join(f"{image_id}: {reason}" for image_id, reason in reasons[:_SHOWN_SKIPS])
            more = f" (and {len(reasons) - _SHOWN_SKIPS} more)" if len(reasons) > _SHOWN_SKIPS else ""
            warnings.warn(f"{root}: skipped {len(reasons)} image(s): {shown}{more}", stacklevel=3)

    def _problem(self, index: int) -> Optional[str]:
        """Why image `index` cannot be used, or None."""
        try:
            path = safe_join(self.source.image_dir, self.source.image_ids[index])
            size = image_size(path, self.max_pixels)
        except ValueError as error:  # ImageError, or an unsafe file name
            return str(error)
        expected = self.source.expected_size(index)
        if expected is not None and tuple(expected) != size:
            return f"image is {size[1]}x{size[0]} but its labels are for {expected[1]}x{expected[0]}"
        return None

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        source_index = self._indices[index]
        image_id = self.source.image_ids[source_index]
        image = read_image(safe_join(self.source.image_dir, image_id), self.max_pixels)
        height, width = image.shape[:2]
        annotations = as_task(self.source.annotations(source_index, height, width), self.task)
        return Sample(image, annotations, self.task, image_id, list(self.vocabulary))

    def __repr__(self) -> str:
        return f"Dataset({self.root}, format={self.format}, task={self.task}, images={len(self)}, skipped={len(self.skipped)})"


def as_task(annotations: list[Annotation], task: str) -> list[Annotation]:
    """Re-express a source's annotations (text = class name) for `task` (see the module docstring)."""
    if task in ("instance", "panoptic"):
        return annotations
    if task == "detection":
        return [Annotation(a.text, a.box, None, a.iscrowd, a.extra) for a in annotations]
    if task == "referring":
        return [
            Annotation(a.extra["phrases"][0], a.box, a.mask, a.iscrowd, {**a.extra, "category": a.text})
            for a in annotations
            if a.extra.get("phrases")
        ]
    with_masks = [a for a in annotations if a.mask is not None]
    if task == "foreground":
        groups = {"foreground": with_masks} if with_masks else {}
    else:  # semantic: one region per class
        groups = {}
        for a in with_masks:
            groups.setdefault(a.text, []).append(a)
    merged = []
    for text, group in groups.items():
        mask = np.logical_or.reduce([a.mask for a in group])
        extra = {"category_id": group[0].extra["category_id"]} if task == "semantic" and "category_id" in group[0].extra else {}
        merged.append(Annotation(text, mask_to_box(mask), mask, extra=extra))
    return merged


def load_dataset(path: Union[str, Path], task: Optional[str] = None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Dataset:
    """Open a labeled folder (or COCO JSON) as a lazy Dataset; ValueError says what is missing."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    root = path.parent if path.is_file() else path
    spec = _dataset_spec(root) if path.is_dir() else {"annotations": path.name}
    image_dir = root / spec.get("images", "images")
    if "images" not in spec and not image_dir.is_dir() and path.is_file():
        image_dir = root  # a COCO JSON beside its images
    format = spec.get("format") or _detect_format(root, spec, task)
    source = _read(format, root, image_dir, spec)
    task = task or spec.get("task") or source.task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if task == "referring" and source.task != "referring":
        raise ValueError(f"{root}: task 'referring' needs referring phrases ('sentences' or 'captions'), found none")
    return Dataset(source, root, format, task, max_pixels)


def _dataset_spec(root: Path) -> dict:
    """The optional dataset.json, validated; {} when absent."""
    spec_path = root / "dataset.json"
    if not spec_path.exists():
        return {}
    spec = load_json(spec_path)
    for key in ("format", "task", "annotations", "images"):
        field(spec, key, "str", spec_path, "top level", default=None)
    if spec.get("format") not in (None, *FORMATS):
        raise ValueError(f"{spec_path}: field 'format' must be one of {', '.join(FORMATS)}, got {spec['format']!r}")
    return spec


def _detect_format(root: Path, spec: dict, task: Optional[str]) -> str:
    """The layout under `root`; with several, panoptic wins only when task == 'panoptic'."""
    found = []
    if spec.get("annotations"):
        json_path = root / spec["annotations"]
        data = load_json(json_path)
        is_panoptic = isinstance(data, dict) and any("segments_info" in a for a in data.get("annotations", []) if isinstance(a, dict))
        found.append("coco-panoptic" if is_panoptic else "coco")
    else:
        if (root / "annotations.json").is_file() or list(root.glob("instances*.json")):
            found.append("coco")
        if _panoptic_json(root) is not None:
            found.append("coco-panoptic")
    if (root / "classes.txt").is_file() and (root / "labels").is_dir():
        labels = root / "labels"
        if next(labels.rglob("*.txt"), None) is not None:
            found.append("yolo-seg")
        elif next(labels.rglob("*.png"), None) is not None:
            found.append("semantic")
    if not found:
        raise ValueError(
            f"{root}: no labels found; expected images/ with annotations.json (COCO), panoptic*.json + its "
            "PNG folder, labels/*.txt + classes.txt (YOLO-seg) or labels/*.png + classes.txt (semantic), "
            "or a dataset.json naming the format"
        )
    if task == "panoptic" and "coco-panoptic" in found:
        return "coco-panoptic"
    return found[0]


def _panoptic_json(root: Path) -> Optional[Path]:
    """panoptic*.json whose PNG folder (same stem) exists."""
    return next((p for p in sorted(root.glob("panoptic*.json")) if p.with_suffix("").is_dir()), None)


def _read(format: str, root: Path, image_dir: Path, spec: dict) -> LabelSource:
    if format == "coco":
        candidates = [root / spec["annotations"]] if spec.get("annotations") else [root / "annotations.json", *sorted(root.glob("instances*.json"))]
        json_path = next((p for p in candidates if p.is_file()), None)
        if json_path is None:
            raise ValueError(f"{root}: format 'coco' needs annotations.json (or dataset.json 'annotations')")
        return read_coco_instances(json_path, image_dir)
    if format == "coco-panoptic":
        json_path = root / spec["annotations"] if spec.get("annotations") else _panoptic_json(root)
        if json_path is None or not json_path.is_file():
            raise ValueError(f"{root}: format 'coco-panoptic' needs panoptic*.json and its PNG folder")
        return read_coco_panoptic(json_path, json_path.with_suffix(""), image_dir)
    if format == "yolo-seg":
        return read_yolo_seg(root)
    return read_semantic_folder(root)
