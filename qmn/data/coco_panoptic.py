"""COCO panoptic: a JSON of per-image `segments_info` plus one RGB PNG of segment ids per image.

Public API:
    read_coco_panoptic(json_path, png_dir, image_dir) -> CocoPanoptic
        label table for `qmn.data.load_dataset`; one Annotation per segment (text = category
        name, extra {"category_id", "id"}); `thing_classes` from the categories' `isthing`.
    write_coco_panoptic(items, out_json, png_dir=None, *, thing_classes, categories=None) -> WriteReport
        items: Samples or (file_name, Prediction) pairs. Segments must not overlap: where two
        annotations of a Sample overlap, the first keeps the pixel. `png_dir` defaults to the
        JSON path without its suffix (COCO's `panoptic_val2017.json` + `panoptic_val2017/`).
    rgb_to_id(png) / id_to_rgb(ids)

The unified Sample has no stuff/thing flag (paper §3.3), but PQ reports things and stuff apart,
so the caller says which classes are things.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Collection, Iterable, Optional, Sequence, Union

import numpy as np
from PIL import Image

from qmn.data.coco import (
    CategoryTable,
    Item,
    WriteReport,
    field,
    image_labels,
    load_json,
    output_path,
    parse_categories,
    parse_images,
    xywh,
)
from qmn.data.sample import Annotation, mask_to_box
from qmn.io_utils import atomic_path, atomic_write_json, safe_join


def rgb_to_id(png: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int64 segment ids, id = R + 256 G + 256^2 B (COCO panopticapi)."""
    png = png.astype(np.int64)
    return png[..., 0] + 256 * png[..., 1] + 256 * 256 * png[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8, the inverse of rgb_to_id."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


@dataclass
class CocoPanoptic:
    """Label table of a COCO panoptic JSON + PNG folder, for `qmn.data.folder.Dataset`."""

    path: Path
    png_dir: Path
    image_dir: Path
    image_ids: list[str]
    vocabulary: list[str]
    sizes: list[tuple[int, int]]
    png_names: list[Optional[str]]  # None: the image has no panoptic entry (all void)
    segments: list[list[dict]]  # validated segments_info per image
    category_names: dict[int, str]
    thing_classes: Optional[list[str]]
    task: str = "panoptic"
    skipped: list[tuple[str, str]] = dataclass_field(default_factory=list)

    def expected_size(self, index: int) -> tuple[int, int]:
        return self.sizes[index]

    def annotations(self, index: int, height: int, width: int) -> list[Annotation]:
        if self.png_names[index] is None:
            return []
        png_path = safe_join(self.png_dir, self.png_names[index])
        try:
            with Image.open(png_path) as png:
                ids = rgb_to_id(np.asarray(png.convert("RGB")))
        except (OSError, ValueError) as error:
            raise ValueError(f"{png_path}: cannot read panoptic PNG: {error}") from None
        if ids.shape != (height, width):
            raise ValueError(f"{png_path}: size {ids.shape[1]}x{ids.shape[0]} differs from its image's {width}x{height}")
        known = {segment["id"] for segment in self.segments[index]}
        unknown = set(np.unique(ids).tolist()) - known - {0}
        if unknown:
            raise ValueError(f"{png_path}: segment ids {sorted(unknown)[:5]} are in the PNG but not in {self.path}")
        annotations = []
        for segment in self.segments[index]:
            mask = ids == segment["id"]
            if mask.any():
                extra = {"category_id": segment["category_id"], "id": segment["id"]}
                annotations.append(
                    Annotation(self.category_names[segment["category_id"]], mask_to_box(mask), mask, segment["iscrowd"], extra)
                )
        return annotations


def read_coco_panoptic(
    json_path: Union[str, Path], png_dir: Union[str, Path], image_dir: Union[str, Path]
) -> CocoPanoptic:
    """Validate a panoptic JSON (PNGs are read lazily, per image)."""
    path = Path(json_path)
    data = load_json(path)
    images = parse_images(data, path)
    categories = parse_categories(data, path)
    entries: dict[Any, dict] = {}
    for i, entry in enumerate(field(data, "annotations", "list", path, "top level")):
        where = f"annotations[{i}]"
        image_id = field(entry, "image_id", "int or str", path, where)
        if image_id not in images:
            raise ValueError(f"{path}: {where}: field 'image_id' {image_id!r} is not in 'images'")
        if image_id in entries:
            raise ValueError(f"{path}: {where}: a second entry for image_id {image_id!r}")
        entries[image_id] = {
            "png": field(entry, "file_name", "str", path, where),
            "segments": _parse_segments(entry, categories, path, where),
        }
    names = {category_id: entry["name"] for category_id, entry in categories.items()}
    has_isthing = any("isthing" in entry for entry in categories.values())
    return CocoPanoptic(
        path=path,
        png_dir=Path(png_dir),
        image_dir=Path(image_dir),
        image_ids=[image["file_name"] for image in images.values()],
        vocabulary=[names[category_id] for category_id in sorted(names)],
        sizes=[(image["height"], image["width"]) for image in images.values()],
        png_names=[entries[image_id]["png"] if image_id in entries else None for image_id in images],
        segments=[entries[image_id]["segments"] if image_id in entries else [] for image_id in images],
        category_names=names,
        thing_classes=[names[i] for i, entry in categories.items() if entry.get("isthing")] if has_isthing else None,
    )


def _parse_segments(entry: dict, categories: dict, path: Path, where: str) -> list[dict]:
    segments, ids = [], set()
    for j, segment in enumerate(field(entry, "segments_info", "list", path, where)):
        at = f"{where}.segments_info[{j}]"
        segment_id = field(segment, "id", "int", path, at)
        category_id = field(segment, "category_id", "int", path, at)
        if segment_id <= 0 or segment_id in ids:
            raise ValueError(f"{path}: {at}: field 'id' {segment_id} must be positive and unique in its image")
        if category_id not in categories:
            raise ValueError(f"{path}: {at}: field 'category_id' {category_id} is not in 'categories'")
        ids.add(segment_id)
        iscrowd = bool(field(segment, "iscrowd", "0/1 or bool", path, at, default=0))
        segments.append({"id": segment_id, "category_id": category_id, "iscrowd": iscrowd})
    return segments


def write_coco_panoptic(
    items: Iterable[Item],
    out_json: Union[str, Path],
    png_dir: Optional[Union[str, Path]] = None,
    *,
    thing_classes: Collection[str],
    categories: Optional[Sequence[Union[str, dict]]] = None,
) -> WriteReport:
    """Write the panoptic JSON and one id PNG per image (`<image stem>.png`), all atomically.

    Annotations without a mask, or left with no pixels after overlaps, are counted in `dropped`.
    """
    out_json = Path(out_json)
    png_dir = Path(png_dir) if png_dir is not None else out_json.with_suffix("")
    report = WriteReport(out_json)
    table = CategoryTable(categories)
    images, entries = [], []
    for labels in map(image_labels, items):
        table.add_names(labels.vocabulary)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": labels.file_name, "height": labels.height, "width": labels.width})
        ids = np.zeros((labels.height, labels.width), np.int64)  # (H, W) segment id, 0 = void
        segments_info = []
        for annotation in labels.annotations:
            if annotation.mask is None:
                report.dropped += 1
                continue
            mask = annotation.mask & (ids == 0)
            if not mask.any():
                report.dropped += 1
                continue
            segment_id = len(segments_info) + 1
            ids[mask] = segment_id
            segments_info.append({
                "id": segment_id,
                "category_id": table.id_for(annotation),
                "iscrowd": int(annotation.iscrowd),
                "bbox": xywh(mask_to_box(mask)),
                "area": int(mask.sum()),
            })
        png_name = str(Path(labels.file_name).with_suffix(".png"))
        with atomic_path(output_path(png_dir, png_name)) as tmp:
            Image.fromarray(id_to_rgb(ids)).save(tmp, format="PNG")
        entries.append({"image_id": image_id, "file_name": png_name, "segments_info": segments_info})
        report.annotations += len(segments_info)
    atomic_write_json(out_json, {"images": images, "annotations": entries, "categories": table.to_json(thing_classes)})
    report.images = len(images)
    return report

