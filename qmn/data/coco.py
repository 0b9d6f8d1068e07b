"""COCO instances JSON: reader (RLE, polygons, boxes, referring phrases) and writer.

Public API:
    read_coco_instances(json_path, image_dir) -> CocoInstances
        a validated label table; `qmn.data.load_dataset` wraps it into a lazy Sequence[Sample].
        Every annotation becomes Annotation(text=category name, box, mask or None, iscrowd,
        extra={"category_id", "id", "phrases"?, "score"?}). Phrases come from RefCOCO-style
        `sentences` ([{"sent": ...}] or [str]) or a `captions` list.
    write_coco_instances(items, out_path, *, categories=None, polygons=False) -> WriteReport
        items: Samples, or (file_name, qmn.structures.Prediction) pairs (adds `score`, so the
        file's "annotations" list is also a COCO results list for COCOeval's loadRes).

Shared by the other readers/writers of qmn.data (kept here because COCO defines them):
    load_json, field, parse_images, parse_categories   validation with errors naming file + field
    ImageLabels, image_labels(item)                    what every writer iterates over
    CategoryTable                                      name <-> id bookkeeping for writers
    WriteReport                                        what every writer returns
    output_path(root, relative)                        a safe path inside an output folder

Errors: malformed JSON, missing or mistyped fields, dangling image/category ids and invalid RLE
raise ValueError naming the file, the entry and the field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from qmn.data.mask_codec import (
    check_polygons,
    check_rle,
    decode_rle,
    encode_rle,
    mask_iou,
    mask_to_polygons,
    polygons_to_mask,
)
from qmn.data.sample import Annotation, Sample, mask_to_box
from qmn.io_utils import atomic_write_json, safe_join
from qmn.structures import Prediction

_KINDS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
    "int or str": lambda v: isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)),
    "0/1 or bool": lambda v: v in (0, 1) and not isinstance(v, float),
}


# ---------------------------------------------------------------- validation shared by readers
def load_json(path: Path) -> Any:
    """Parsed JSON of `path`; ValueError naming the file on unreadable or malformed content."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read: {error}") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None


def field(obj: Any, key: str, kind: str, path: Path, where: str, default: Any = ...) -> Any:
    """`obj[key]` checked to be of `kind` (a key of _KINDS); `default` makes it optional."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {where} must be a JSON object, got {type(obj).__name__}")
    if key not in obj or obj[key] is None:
        if default is not ...:
            return default
        raise ValueError(f"{path}: {where}: missing field '{key}'")
    value = obj[key]
    if not _KINDS[kind](value):
        raise ValueError(f"{path}: {where}: field '{key}' must be {kind}, got {json.dumps(value)[:60]}")
    return value


def parse_images(data: Any, path: Path) -> dict[Any, dict]:
    """{image id: {"file_name", "height", "width"}} of a COCO `images` table."""
    images: dict[Any, dict] = {}
    for i, entry in enumerate(field(data, "images", "list", path, "top level")):
        where = f"images[{i}]"
        image_id = field(entry, "id", "int or str", path, where)
        if image_id in images:
            raise ValueError(f"{path}: {where}: duplicate image id {image_id!r}")
        height, width = field(entry, "height", "int", path, where), field(entry, "width", "int", path, where)
        if height <= 0 or width <= 0:
            raise ValueError(f"{path}: {where}: 'height' and 'width' must be positive, got {height}x{width}")
        images[image_id] = {"file_name": field(entry, "file_name", "str", path, where), "height": height, "width": width}
    return images


def parse_categories(data: Any, path: Path) -> dict[int, dict]:
    """{category id: the category dict} of a COCO `categories` table; ids and names unique."""
    categories: dict[int, dict] = {}
    names: set[str] = set()
    for i, entry in enumerate(field(data, "categories", "list", path, "top level")):
        where = f"categories[{i}]"
        category_id, name = field(entry, "id", "int", path, where), field(entry, "name", "str", path, where)
        if category_id in categories or name in names:
            raise ValueError(f"{path}: {where}: duplicate category id {category_id} or name {name!r}")
        categories[category_id] = entry
        names.add(name)
    return categories


def _phrases(entry: dict, path: Path, where: str) -> list[str]:
    """Referring phrases of an annotation: `sentences` ([{"sent": s}] or [s]) then `captions` ([s])."""
    phrases = []
    for key in ("sentences", "captions"):
        for j, item in enumerate(field(entry, key, "list", path, where, default=[])):
            sentence = item.get("sent") if isinstance(item, dict) else item
            if not isinstance(sentence, str):
                raise ValueError(f"{path}: {where}: field '{key}'[{j}] must be a string or {{\"sent\": string}}")
            phrases.append(sentence)
    return phrases


# ---------------------------------------------------------------- reader
@dataclass
class _Region:
    """One validated annotation, decoded to a mask only when its image is loaded."""

    category_id: int
    segmentation: Union[dict, list, None]
    bbox: Optional[list]
    iscrowd: bool
    phrases: list[str]
    annotation_id: Any
    score: Optional[float]


@dataclass
class CocoInstances:
    """Label table of a COCO instances file, in the form `qmn.data.folder.Dataset` consumes."""

    path: Path
    image_dir: Path
    image_ids: list[str]  # file names relative to image_dir
    vocabulary: list[str]
    task: str
    sizes: list[tuple[int, int]]  # (H, W) per image as the JSON declares it
    regions: list[list[_Region]]
    category_names: dict[int, str]
    skipped: list[tuple[str, str]] = dataclass_field(default_factory=list)  # (image id, reason)
    thing_classes: Optional[list[str]] = None

    def expected_size(self, index: int) -> tuple[int, int]:
        return self.sizes[index]

    def annotations(self, index: int, height: int, width: int) -> list[Annotation]:
        return [self._annotation(region, height, width) for region in self.regions[index]]

    def _annotation(self, region: _Region, height: int, width: int) -> Annotation:
        extra: dict = {"category_id": region.category_id, "id": region.annotation_id}
        if region.phrases:
            extra["phrases"] = list(region.phrases)
        if region.score is not None:
            extra["score"] = region.score
        text = self.category_names[region.category_id]
        mask = None
        try:
            if isinstance(region.segmentation, dict):
                mask = decode_rle(region.segmentation, height, width)
            elif region.segmentation:
                mask = polygons_to_mask(region.segmentation, height, width)
        except ValueError as error:
            raise ValueError(f"{self.path}: annotation id {region.annotation_id}: field 'segmentation': {error}") from None
        if mask is not None and mask.any():
            box = mask_to_box(mask)
        elif region.bbox is not None:
            x, y, w, h = region.bbox
            box = np.array([x, y, x + w, y + h], np.float32)
        else:
            box = np.zeros(4, np.float32)
        return Annotation(text=text, box=box, mask=mask, iscrowd=region.iscrowd, extra=extra)


def read_coco_instances(json_path: Union[str, Path], image_dir: Union[str, Path]) -> CocoInstances:
    """Validate a COCO instances JSON and index its annotations per image (masks decode lazily)."""
    path = Path(json_path)
    data = load_json(path)
    images = parse_images(data, path)
    categories = parse_categories(data, path)
    per_image: dict[Any, list[_Region]] = {image_id: [] for image_id in images}
    for i, entry in enumerate(field(data, "annotations", "list", path, "top level")):
        annotation_id = entry.get("id", i) if isinstance(entry, dict) else i
        where = f"annotations[{i}] (id {annotation_id})"
        image_id = field(entry, "image_id", "int or str", path, where)
        category_id = field(entry, "category_id", "int", path, where)
        if image_id not in images:
            raise ValueError(f"{path}: {where}: field 'image_id' {image_id!r} is not in 'images'")
        if category_id not in categories:
            raise ValueError(f"{path}: {where}: field 'category_id' {category_id} is not in 'categories'")
        per_image[image_id].append(_parse_region(entry, images[image_id], category_id, annotation_id, path, where))
    names = {category_id: entry["name"] for category_id, entry in categories.items()}
    regions = list(per_image.values())
    flat = [region for image_regions in regions for region in image_regions]
    if any(region.phrases for region in flat):
        task = "referring"
    elif any(region.segmentation for region in flat) or not flat:
        task = "instance"
    else:
        task = "detection"
    return CocoInstances(
        path=path,
        image_dir=Path(image_dir),
        image_ids=[images[image_id]["file_name"] for image_id in per_image],
        vocabulary=[names[category_id] for category_id in sorted(names)],
        task=task,
        sizes=[(images[image_id]["height"], images[image_id]["width"]) for image_id in per_image],
        regions=regions,
        category_names=names,
    )


def _parse_region(entry: dict, image: dict, category_id: int, annotation_id: Any, path: Path, where: str) -> _Region:
    segmentation = entry.get("segmentation")
    try:
        if isinstance(segmentation, dict):
            check_rle(segmentation, image["height"], image["width"])
        elif segmentation is not None:
            check_polygons(segmentation)
    except ValueError as error:
        raise ValueError(f"{path}: {where}: field 'segmentation': {error}") from None
    bbox = field(entry, "bbox", "list", path, where, default=None)
    if bbox is not None and (len(bbox) != 4 or not all(_KINDS["number"](v) for v in bbox) or min(bbox[2:]) < 0):
        raise ValueError(f"{path}: {where}: field 'bbox' must be [x, y, width, height] with width, height >= 0")
    if not segmentation and bbox is None:
        raise ValueError(f"{path}: {where}: needs a 'segmentation' or a 'bbox'")
    score = field(entry, "score", "number", path, where, default=None)
    return _Region(
        category_id=category_id,
        segmentation=segmentation or None,
        bbox=bbox,
        iscrowd=bool(field(entry, "iscrowd", "0/1 or bool", path, where, default=0)),
        phrases=_phrases(entry, path, where),
        annotation_id=annotation_id,
        score=None if score is None else float(score),
    )


# ---------------------------------------------------------------- shared by the writers
@dataclass
class ImageLabels:
    """One image's regions as the writers see them, whether they came from a Sample or a Prediction."""

    file_name: str
    height: int
    width: int
    annotations: list[Annotation]  # extra may hold "score", "phrases", "category_id", "category"
    vocabulary: list[str]


Item = Union[Sample, tuple[str, Prediction]]


def image_labels(item: Item) -> ImageLabels:
    """Normalise a Sample or a (file_name, Prediction) pair for writing.

    Prediction segments become Annotations with extra {"score", "query_type"}; panoptic segments
    take their pixels from `Prediction.panoptic` (disjoint), referring ones carry their phrase.
    """
    if isinstance(item, Sample):
        if not item.image_id:
            raise ValueError("a Sample to write needs its image_id (the image's file name)")
        height, width = item.image.shape[:2]
        return ImageLabels(item.image_id, height, width, item.annotations, list(item.vocabulary))
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Prediction):
        file_name, prediction = item
        height, width = prediction.image_size
        annotations = []
        for segment in prediction.segments:
            mask = segment.mask
            if prediction.task == "panoptic" and prediction.panoptic is not None:
                mask = prediction.panoptic == segment.id
            extra: dict = {"score": float(segment.score), "query_type": segment.query_type}
            if prediction.task == "referring":
                extra["phrases"] = [segment.label]
            annotations.append(Annotation(segment.label, np.asarray(segment.box, np.float32), mask, extra=extra))
        return ImageLabels(str(file_name), int(height), int(width), annotations, list(prediction.prompts))
    raise TypeError(f"cannot write {type(item).__name__}: expected a Sample or a (file_name, Prediction) pair")


class CategoryTable:
    """Category ids for writers.

    With `categories` (names -> ids 1..N, or COCO dicts kept as given) the table is fixed. Otherwise
    it grows: an annotation's extra["category_id"] is kept as its id (a source's or a generator's
    ids survive); names without ids get the next free id, in vocabulary order while no explicit id
    has been seen; vocabulary names no annotation used are listed at the end, so empty classes stay.
    """

    def __init__(self, categories: Optional[Sequence[Union[str, dict]]] = None) -> None:
        self.entries: dict[int, dict] = {}
        self.fixed = categories is not None
        self.pending: list[str] = []  # vocabulary names without an id yet
        self.explicit_ids = False
        for i, category in enumerate(categories or []):
            entry = dict(category) if isinstance(category, dict) else {"id": i + 1, "name": category}
            self._add(int(entry["id"]), entry["name"], entry)

    def add_names(self, names: Iterable[str]) -> None:
        """Remember a dataset's vocabulary so classes with no annotation are listed too."""
        if not self.fixed:
            self.pending += [n for n in names if n not in self.pending and self._id_of(n) is None]

    def id_for(self, annotation: Annotation) -> int:
        """The category id of an annotation: its extra["category_id"] if any, else by name."""
        name = annotation.extra.get("category", annotation.text)
        category_id = annotation.extra.get("category_id")
        known = self._id_of(name)
        if category_id is None:
            if known is None:
                if self.fixed:
                    raise ValueError(f"class {name!r} is not in the given categories")
                if not self.explicit_ids:
                    self._assign_pending()
                known = self._id_of(name)
            return known if known is not None else self._add(self._next_id(), name)
        category_id, self.explicit_ids = int(category_id), True
        if category_id in self.entries:
            if self.entries[category_id]["name"] != name:
                raise ValueError(f"category_id {category_id} is {self.entries[category_id]['name']!r}, not {name!r}")
            return category_id
        if self.fixed or known is not None:
            raise ValueError(f"class {name!r} with category_id {category_id} does not match the category table")
        return self._add(category_id, name)

    def to_json(self, thing_classes: Optional[Iterable[str]] = None) -> list[dict]:
        """COCO `categories`; with `thing_classes`, each gets the panoptic `isthing` flag."""
        self._assign_pending()
        things = None if thing_classes is None else set(thing_classes)
        table = []
        for category_id in sorted(self.entries):
            entry = dict(self.entries[category_id])
            entry.setdefault("supercategory", entry["name"])
            if things is not None:
                entry["isthing"] = int(entry["name"] in things)
            table.append(entry)
        return table

    def _assign_pending(self) -> None:
        for name in self.pending:
            if self._id_of(name) is None:
                self._add(self._next_id(), name)
        self.pending = []

    def _next_id(self) -> int:
        return max(self.entries, default=0) + 1

    def _id_of(self, name: str) -> Optional[int]:
        return next((i for i, entry in self.entries.items() if entry["name"] == name), None)

    def _add(self, category_id: int, name: str, entry: Optional[dict] = None) -> int:
        if category_id in self.entries or self._id_of(name) is not None:
            raise ValueError(f"duplicate category id {category_id} or name {name!r}")
        self.entries[category_id] = {**(entry or {}), "id": category_id, "name": name}
        return category_id


@dataclass
class WriteReport:
    """What a writer wrote. `polygon_iou`: annotation id -> IoU of its polygons' rasterisation
    with the original mask (1.0 = nothing lost); `dropped`: annotations that could not be written."""

    path: Path
    images: int = 0
    annotations: int = 0
    dropped: int = 0
    polygon_iou: dict[Any, float] = dataclass_field(default_factory=dict)

    @property
    def min_polygon_iou(self) -> float:
        return min(self.polygon_iou.values(), default=1.0)


def output_path(root: Union[str, Path], relative: str) -> Path:
    """`root / relative` for writing (root created); refuses paths that would leave `root`."""
    Path(root).mkdir(parents=True, exist_ok=True)
    return safe_join(root, relative)


def xywh(box: np.ndarray) -> list[float]:
    """COCO bbox [x, y, w, h] of an xyxy box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


# ---------------------------------------------------------------- writer
def write_coco_instances(
    items: Iterable[Item],
    out_path: Union[str, Path],
    *,
    categories: Optional[Sequence[Union[str, dict]]] = None,
    polygons: bool = False,
) -> WriteReport:
    """Write a COCO instances JSON (atomically); masks as RLE, or as polygons with `polygons=True`.

    Crowd and empty masks stay RLE either way. Category ids follow `categories` when given (names
    -> 1..N, or COCO dicts), else each annotation's extra["category_id"] or a new id per new name.
    extra["phrases"] are written as RefCOCO `sentences`. File names are the Samples' image_id.
    """
    report = WriteReport(Path(out_path))
    table = CategoryTable(categories)
    images, annotations, seen = [], [], set()
    for labels in map(image_labels, items):
        if labels.file_name in seen:
            raise ValueError(f"image {labels.file_name!r} appears twice")
        seen.add(labels.file_name)
        table.add_names(labels.vocabulary)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": labels.file_name, "height": labels.height, "width": labels.width})
        for annotation in labels.annotations:
            entry = _annotation_json(annotation, len(annotations) + 1, image_id, table.id_for(annotation))
            if polygons and annotation.mask is not None and not annotation.iscrowd and annotation.mask.any():
                entry["segmentation"] = mask_to_polygons(annotation.mask)
                rasterised = polygons_to_mask(entry["segmentation"], labels.height, labels.width)
                report.polygon_iou[entry["id"]] = mask_iou(annotation.mask, rasterised)
            annotations.append(entry)
    atomic_write_json(report.path, {"images": images, "annotations": annotations, "categories": table.to_json()})
    report.images, report.annotations = len(images), len(annotations)
    return report


def _annotation_json(annotation: Annotation, annotation_id: int, image_id: int, category_id: int) -> dict:
    mask = annotation.mask
    box = mask_to_box(mask) if mask is not None and mask.any() else annotation.box
    entry: dict = {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": xywh(box),
        "area": int(mask.sum()) if mask is not None else round(float((box[2] - box[0]) * (box[3] - box[1])), 2),
        "iscrowd": int(annotation.iscrowd),
    }
    if mask is not None:
        entry["segmentation"] = encode_rle(mask)
    if "score" in annotation.extra:
        entry["score"] = float(annotation.extra["score"])
    if annotation.extra.get("phrases"):
        entry["sentences"] = [{"sent": phrase} for phrase in annotation.extra["phrases"]]
    return entry
