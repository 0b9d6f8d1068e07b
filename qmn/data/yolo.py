"""Ultralytics YOLO-seg folders: images/, labels/*.txt (`class x1 y1 x2 y2 ...`, normalised
polygon; `class cx cy w h` lines are boxes), classes.txt (class index = line number from 0).

Public API:
    read_yolo_seg(root) -> YoloSeg           label table for `qmn.data.load_dataset`
    write_yolo_seg(samples, out_dir, *, classes=None) -> WriteReport
        labels/<image stem>.txt per Sample (empty when it has no objects) + classes.txt; images
        are the caller's (`qmn.data.convert` copies them). Each mask is one polygon: parts and
        holes spliced with zero-width cuts (as Ultralytics' own converter merges multi-part
        COCO objects); `polygon_iou` ("file:line" -> IoU) reports what each normalised polygon keeps.
    read_classes_txt(path) -> dict[int, str]  one name per line, or `index<TAB>name` lines
    write_classes_txt(path, names: dict[int, str], indexed: bool)
    list_images(image_dir) -> list[str]       image files under a folder, relative, sorted
"""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from qmn.data.coco import WriteReport, image_labels, output_path
from qmn.data.image_io import IMAGE_EXTENSIONS
from qmn.data.mask_codec import mask_iou, mask_to_polygon, polygons_to_mask
from qmn.data.sample import Annotation, Sample, mask_to_box
from qmn.io_utils import atomic_write_text

_DECIMALS = 6


def list_images(image_dir: Path) -> list[str]:
    """Image files (by extension) anywhere under `image_dir`, as sorted POSIX relative paths."""
    return sorted(
        path.relative_to(image_dir).as_posix()
        for path in image_dir.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and not path.name.startswith(".")
    )


def read_classes_txt(path: Path) -> dict[int, str]:
    """{index: name}: `index<TAB>name` lines, or one name per line (index = line number from 0)."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the class list: {error}") from None
    while lines and not lines[-1]:
        lines.pop()
    indexed = bool(lines) and all("\t" in line for line in lines)
    classes: dict[int, str] = {}
    for number, line in enumerate(lines):
        index_text, _, name = line.partition("\t") if indexed else (str(number), "", line)
        name = name.strip()
        if not index_text.strip().isdigit() or not name:
            raise ValueError(f"{path}:{number + 1}: expected 'index<TAB>name' or a class name, got {line!r}")
        if int(index_text) in classes:
            raise ValueError(f"{path}:{number + 1}: duplicate class index {int(index_text)}")
        classes[int(index_text)] = name
    if not classes:
        raise ValueError(f"{path}: the class list is empty")
    return classes


def write_classes_txt(path: Path, names: dict[int, str], indexed: bool) -> None:
    """Write a class list; `indexed=False` needs indices 0..N-1 (one name per line)."""
    if indexed:
        text = "".join(f"{index}\t{name}\n" for index, name in sorted(names.items()))
    else:
        if sorted(names) != list(range(len(names))):
            raise ValueError("a one-name-per-line class list needs indices 0..N-1")
        text = "".join(f"{names[index]}\n" for index in range(len(names)))
    atomic_write_text(path, text)


@dataclass
class YoloSeg:
    """Label table of a YOLO-seg folder: normalised polygons / boxes per image, rasterised lazily."""

    root: Path
    image_dir: Path
    image_ids: list[str]
    vocabulary: list[str]
    task: str
    objects: list[list[tuple[int, np.ndarray]]]  # per image: (class index, normalised coords (2K,))
    skipped: list[tuple[str, str]] = dataclass_field(default_factory=list)
    thing_classes: Optional[list[str]] = None

    def expected_size(self, index: int) -> None:
        return None

    def annotations(self, index: int, height: int, width: int) -> list[Annotation]:
        annotations = []
        scale = np.array([width, height], np.float64)
        for class_index, coords in self.objects[index]:
            points = coords.reshape(-1, 2) * scale  # (K, 2) pixels
            extra = {"class_index": class_index}  # not a category_id: COCO ids start at 1
            name = self.vocabulary[class_index]
            if len(points) == 2:  # cx cy w h
                (cx, cy), (w, h) = points
                box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)
                annotations.append(Annotation(name, box, None, extra=extra))
            else:
                mask = polygons_to_mask([points.reshape(-1).tolist()], height, width)
                annotations.append(Annotation(name, mask_to_box(mask), mask, extra=extra))
        return annotations


def read_yolo_seg(root: Union[str, Path]) -> YoloSeg:
    """Validate classes.txt and every labels/*.txt of a YOLO-seg folder (errors name file:line)."""
    root = Path(root)
    classes = read_classes_txt(root / "classes.txt")
    if sorted(classes) != list(range(len(classes))):
        raise ValueError(f"{root / 'classes.txt'}: class indices must be 0..N-1")
    image_dir = root / "images"
    image_ids = list_images(image_dir)
    objects = [_read_label_file(root / "labels" / Path(i).with_suffix(".txt"), len(classes)) for i in image_ids]
    flat = [coords for image_objects in objects for _, coords in image_objects]
    return YoloSeg(
        root=root,
        image_dir=image_dir,
        image_ids=image_ids,
        vocabulary=[classes[i] for i in range(len(classes))],
        task="detection" if flat and all(len(c) == 4 for c in flat) else "instance",
        objects=objects,
    )


def _read_label_file(path: Path, num_classes: int) -> list[tuple[int, np.ndarray]]:
    """Objects of one label file; a missing file means an image with no objects (as in Ultralytics)."""
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the label file: {error}") from None
    objects = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            class_index, coords = int(tokens[0]), np.array([float(t) for t in tokens[1:]], np.float64)
        except ValueError:
            raise ValueError(f"{path}:{number}: expected 'class x1 y1 x2 y2 ...' numbers, got {line.strip()[:60]!r}") from None
        if not 0 <= class_index < num_classes:
            raise ValueError(f"{path}:{number}: class {class_index} is not in classes.txt (0..{num_classes - 1})")
        if not (len(coords) == 4 or (len(coords) >= 6 and len(coords) % 2 == 0)) or not np.isfinite(coords).all():
            raise ValueError(f"{path}:{number}: expected 4 box values or an even number >= 6 of polygon values")
        objects.append((class_index, coords))
    return objects


def write_yolo_seg(
    samples: Iterable[Sample], out_dir: Union[str, Path], *, classes: Optional[Sequence[str]] = None
) -> WriteReport:
    """Write labels/*.txt and classes.txt under `out_dir` (see the module docstring)."""
    out_dir = Path(out_dir)
    report = WriteReport(out_dir)
    names = list(classes) if classes is not None else []
    for labels in map(image_labels, samples):
        if classes is None:
            names += [name for name in labels.vocabulary if name not in names]
        size = np.array([labels.width, labels.height], np.float64)
        lines = []
        for annotation in labels.annotations:
            name = annotation.extra.get("category", annotation.text)
            if name not in names:
                if classes is not None:
                    raise ValueError(f"{labels.file_name}: class {name!r} is not in the given classes")
                names.append(name)
            line, iou = _object_line(annotation, names.index(name), size, labels.height, labels.width)
            if line is None:
                report.dropped += 1
                continue
            lines.append(line)
            if iou is not None:
                report.polygon_iou[f"{labels.file_name}:{len(lines)}"] = iou  # label file line number
        atomic_write_text(output_path(out_dir / "labels", str(Path(labels.file_name).with_suffix(".txt"))), "".join(lines))
        report.images += 1
        report.annotations += len(lines)
    write_classes_txt(out_dir / "classes.txt", dict(enumerate(names)), indexed=False)
    return report


def _object_line(
    annotation: Annotation, class_index: int, size: np.ndarray, height: int, width: int
) -> tuple[Optional[str], Optional[float]]:
    """(label line or None for an empty mask, IoU of the written polygon with the mask or None for a box)."""
    iou = None
    if annotation.mask is None:
        x1, y1, x2, y2 = annotation.box
        values = np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]) / np.tile(size, 2)
    else:
        polygon = mask_to_polygon(annotation.mask)
        if not polygon:
            return None, None
        values = np.round(np.array(polygon).reshape(-1, 2) / size, _DECIMALS).reshape(-1)  # (2K,) normalised
        pixels = (values.reshape(-1, 2) * size).reshape(-1).tolist()
        iou = mask_iou(annotation.mask, polygons_to_mask([pixels], height, width))
    return f"{class_index} " + " ".join(f"{v:.{_DECIMALS}f}".rstrip("0").rstrip(".") for v in values) + "\n", iou
