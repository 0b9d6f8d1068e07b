"""Semantic label-map folders: images/, labels/<image stem>.png (one class index per pixel),
classes.txt (`index<TAB>name` lines, or one name per line).

Public API:
    read_semantic_folder(root) -> SemanticFolder   label table for `qmn.data.load_dataset`;
        one Annotation per class present (text = class name, extra {"category_id": index}).
    write_semantic_folder(samples, out_dir, *, classes=None) -> WriteReport
        labels/<stem>.png (uint8, 0 = "null" = unlabeled) + classes.txt; images are the caller's.
    IGNORE_NAMES

Which values are not classes: an index whose name in classes.txt is one of IGNORE_NAMES (e.g.
`0<TAB>null`), and 255 when classes.txt does not name it (the common "ignore" value). Any other
value missing from classes.txt is an error, since silently dropping it would lose labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
from PIL import Image

from qmn.data.coco import WriteReport, image_labels, output_path
from qmn.data.sample import Annotation, Sample
from qmn.data.yolo import list_images, read_classes_txt, write_classes_txt
from qmn.io_utils import atomic_path

IGNORE_NAMES = frozenset({"null", "void", "ignore", "unlabeled", "unlabelled", "__ignore__"})
_IGNORE_VALUE = 255
_NULL_NAME = "null"


@dataclass
class SemanticFolder:
    """Label table of a semantic folder; label maps are read per image, lazily."""

    root: Path
    image_dir: Path
    image_ids: list[str]
    vocabulary: list[str]
    classes: dict[int, str]  # index -> name, ignore classes excluded
    ignored: frozenset[int]  # values that are neither a class nor an error
    skipped: list[tuple[str, str]] = dataclass_field(default_factory=list)
    task: str = "semantic"
    thing_classes: Optional[list[str]] = None

    def expected_size(self, index: int) -> None:
        return None

    def label_path(self, index: int) -> Path:
        return self.root / "labels" / Path(self.image_ids[index]).with_suffix(".png")

    def annotations(self, index: int, height: int, width: int) -> list[Annotation]:
        path = self.label_path(index)
        try:
            with Image.open(path) as label:
                if label.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                    raise ValueError(f"label maps must be single-channel class indices, got mode {label.mode}")
                values = np.asarray(label).astype(np.int64)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read the label map: {error}") from None
        if values.shape != (height, width):
            raise ValueError(f"{path}: size {values.shape[1]}x{values.shape[0]} differs from its image's {width}x{height}")
        present = np.unique(values).tolist()
        unknown = [v for v in present if v not in self.classes and v not in self.ignored]
        if unknown:
            raise ValueError(f"{path}: values {unknown[:5]} are not in {self.root / 'classes.txt'}")
        return [
            Annotation.from_mask(self.classes[v], values == v, extra={"category_id": v})
            for v in present
            if v in self.classes
        ]


def read_semantic_folder(root: Union[str, Path]) -> SemanticFolder:
    """Index a semantic folder; images without a label map are listed in `skipped`."""
    root = Path(root)
    named = read_classes_txt(root / "classes.txt")
    classes = {index: name for index, name in named.items() if name.lower() not in IGNORE_NAMES}
    ignored = frozenset(set(named) - set(classes) | ({_IGNORE_VALUE} if _IGNORE_VALUE not in named else set()))
    image_dir = root / "images"
    image_ids, skipped = [], []
    for image_id in list_images(image_dir):
        if (root / "labels" / Path(image_id).with_suffix(".png")).is_file():
            image_ids.append(image_id)
        else:
            skipped.append((image_id, "no label map in labels/"))
    return SemanticFolder(root, image_dir, image_ids, [classes[i] for i in sorted(classes)], classes, ignored, skipped)


def write_semantic_folder(
    samples: Iterable[Sample], out_dir: Union[str, Path], *, classes: Optional[Sequence[str]] = None
) -> WriteReport:
    """Write labels/<stem>.png and classes.txt (`0<TAB>null`, then the classes from 1).

    Class order: `classes` when given, else the Samples' vocabularies then new names as met.
    Overlapping masks: the first annotation keeps the pixel. Box-only annotations are dropped.
    """
    out_dir = Path(out_dir)
    report = WriteReport(out_dir)
    names = [name for name in (classes or []) if name.lower() not in IGNORE_NAMES]
    for labels in map(image_labels, samples):
        if classes is None:
            names += [n for n in labels.vocabulary if n not in names and n.lower() not in IGNORE_NAMES]
        label_map = np.zeros((labels.height, labels.width), np.uint8)  # (H, W) class index, 0 = null
        for annotation in labels.annotations:
            name = annotation.extra.get("category", annotation.text)
            if annotation.mask is None or name.lower() in IGNORE_NAMES:
                report.dropped += 1
                continue
            if name not in names:
                if classes is not None:
                    raise ValueError(f"{labels.file_name}: class {name!r} is not in the given classes")
                names.append(name)
            if len(names) >= _IGNORE_VALUE:
                raise ValueError(f"uint8 label maps hold at most {_IGNORE_VALUE - 1} classes")
            label_map[annotation.mask & (label_map == 0)] = names.index(name) + 1
            report.annotations += 1
        with atomic_path(output_path(out_dir / "labels", str(Path(labels.file_name).with_suffix(".png")))) as tmp:
            Image.fromarray(label_map).save(tmp, format="PNG")
        report.images += 1
    write_classes_txt(out_dir / "classes.txt", {0: _NULL_NAME, **{i + 1: n for i, n in enumerate(names)}}, indexed=True)
    return report
