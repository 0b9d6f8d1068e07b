"""Export the annotations of an opened folder: COCO instances (RLE or polygons), COCO panoptic,
mask PNGs, RGBA cut-outs, zipped. Every COCO file is re-read with pycocotools and checked against
the masks before it is offered, so a download is never a file another tool cannot open."""
from __future__ import annotations

import json
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from app.annotations import ImageAnnotations, encode_rle
from app.tools import cutout_rgba
from app.workspace import Workspace, sanitize_filename
from qmn.io_utils import atomic_path, atomic_write_json

FORMATS = ("coco_instances", "coco_panoptic", "mask_pngs", "cutouts")
ENCODINGS = ("rle", "polygons")


@dataclass
class ExportResult:
    zip_path: Path
    report: dict  # counts, per-annotation polygon IoU, checks passed


def categories_of(anns: Sequence[ImageAnnotations]) -> list[dict]:
    labels = sorted({r.label for a in anns for r in a.regions})
    return [{"id": i + 1, "name": name, "supercategory": "object", "isthing": 1} for i, name in enumerate(labels)]


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours as COCO polygons [x0, y0, x1, y1, ...]; holes are lost (hence the IoU report)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def polygons_iou(polygons: list[list[float]], mask: np.ndarray) -> float:
    h, w = mask.shape
    raster = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))).astype(bool)
    union = (raster | mask).sum()
    return float((raster & mask).sum() / union) if union else 1.0


def build_coco_instances(anns: Sequence[ImageAnnotations], encoding: str = "rle") -> tuple[dict, list[dict]]:
    """(COCO instances dict, [{"annotation_id", "image", "polygon_iou"}] for the polygon encoding)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"mask encoding must be one of {ENCODINGS}, got {encoding!r}")
    categories = categories_of(anns)
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations, losses = [], [], []
    for image_id, ann in enumerate(anns, start=1):
        images.append({"id": image_id, "file_name": ann.image, "height": ann.height, "width": ann.width})
        for r in ann.regions:
            if not r.mask.any():
                continue
            ys, xs = np.nonzero(r.mask)
            entry = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat_id[r.label],
                "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
                "area": float(r.area),
                "iscrowd": 0,
                "score": float(r.score),
                "query_type": r.query_type,
                "accepted": r.accepted,
            }
            polygons = mask_to_polygons(r.mask) if encoding == "polygons" else []
            if polygons:
                entry["segmentation"] = polygons
                entry["polygon_iou"] = round(polygons_iou(polygons, r.mask), 4)
                losses.append({"annotation_id": entry["id"], "image": ann.image, "polygon_iou": entry["polygon_iou"]})
            else:  # RLE asked for, or a region too thin for a polygon
                entry["segmentation"] = encode_rle(r.mask)
            annotations.append(entry)
    return {"images": images, "annotations": annotations, "categories": categories}, losses


def verify_coco_instances(path: Path, anns: Sequence[ImageAnnotations], min_iou: float) -> int:
    """Re-read `path` with pycocotools; every annotation's mask must match its region (IoU >= min_iou)."""
    coco = COCO(str(path))
    masks = [r.mask for a in anns for r in a.regions if r.mask.any()]
    if len(coco.anns) != len(masks):
        raise ValueError(f"{path.name}: {len(coco.anns)} annotations re-read, {len(masks)} written")
    for ann_id, mask in zip(sorted(coco.anns), masks):
        decoded = coco.annToMask(coco.anns[ann_id]).astype(bool)
        union = (decoded | mask).sum()
        iou = (decoded & mask).sum() / union if union else 1.0
        if iou < min_iou:
            raise ValueError(f"{path.name}: annotation {ann_id} re-read with IoU {iou:.3f} < {min_iou}")
    return len(coco.anns)


def panoptic_png(ann: ImageAnnotations) -> tuple[np.ndarray, list[int]]:
    """(H, W, 3) uint8 COCO panoptic id image (id = R + 256 G + 256^2 B) and the region ids drawn.

    Panoptic segments cannot overlap: higher-scoring regions are painted last and win shared pixels.
    """
    ids = np.zeros((ann.height, ann.width), np.int64)
    for r in sorted(ann.regions, key=lambda r: r.score):
        ids[r.mask] = r.id
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    return rgb, [int(i) for i in np.unique(ids) if i]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 COCO panoptic colours -> (H, W) int64 segment ids."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def write_coco_panoptic(anns: Sequence[ImageAnnotations], out_dir: Path) -> Path:
    """`panoptic.json` + `panoptic/<stem>.png`; re-reads every PNG and checks ids and areas."""
    categories = categories_of(anns)
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for image_id, ann in enumerate(anns, start=1):
        rgb, drawn = panoptic_png(ann)
        png_name = f"{Path(ann.image).stem}.png"
        _write_png(out_dir / "panoptic" / png_name, rgb)
        ids = rgb_to_id(rgb)
        by_id = {r.id: r for r in ann.regions}
        segments = []
        for sid in drawn:
            ys, xs = np.nonzero(ids == sid)
            segments.append({
                "id": sid, "category_id": cat_id[by_id[sid].label], "iscrowd": 0, "area": int(len(xs)),
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
            })
        images.append({"id": image_id, "file_name": ann.image, "height": ann.height, "width": ann.width})
        annotations.append({"image_id": image_id, "file_name": png_name, "segments_info": segments})
    path = out_dir / "panoptic.json"
    atomic_write_json(path, {"images": images, "annotations": annotations, "categories": categories})
    verify_panoptic(path)
    return path


def verify_panoptic(path: Path) -> None:
    """Each PNG's ids and pixel counts must equal its segments_info."""
    data = json.loads(path.read_text())
    for entry in data["annotations"]:
        bgr = cv2.imread(str(path.parent / "panoptic" / entry["file_name"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{entry['file_name']}: panoptic PNG unreadable after writing")
        ids = rgb_to_id(bgr[..., ::-1])
        for seg in entry["segments_info"]:
            if int((ids == seg["id"]).sum()) != seg["area"]:
                raise ValueError(f"{entry['file_name']}: segment {seg['id']} area differs after re-reading")


def _write_png(path: Path, array: np.ndarray) -> None:
    """Atomic PNG write; RGB(A) arrays are converted to OpenCV's BGR(A) order."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"{path.name}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(png.tobytes())


def region_file_name(region_id: int, label: str) -> str:
    return f"{region_id:03d}_{sanitize_filename(label)}.png"


def write_masks_and_cutouts(ws: Workspace, anns: Sequence[ImageAnnotations], out_dir: Path, formats: Sequence[str]) -> int:
    """`masks/<stem>/<id>_<label>.png` (0/255) and `cutouts/<stem>/<id>_<label>.png` (RGBA); returns files written."""
    written = 0
    for ann in anns:
        image = ws.read_image(ann.image) if "cutouts" in formats else None
        for r in ann.regions:
            name = region_file_name(r.id, r.label)
            if "mask_pngs" in formats:
                _write_png(out_dir / "masks" / Path(ann.image).stem / name, r.mask.astype(np.uint8) * 255)
                written += 1
            if image is not None:
                _write_png(out_dir / "cutouts" / Path(ann.image).stem / name, cutout_rgba(image, r))
                written += 1
    return written


def zip_folder(folder: Path, zip_path: Path) -> Path:
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(folder).as_posix())
    return zip_path


def export_folder(
    ws: Workspace,
    formats: Sequence[str] = FORMATS,
    encoding: str = "rle",
    out_root: Path | None = None,
    mark_exported: bool = True,
) -> ExportResult:
    """Export every annotated image of `ws` into `<out_root>/<timestamp>/` and zip it.

    Raises ValueError when nothing is annotated or a format is unknown; marks images "exported".
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"export formats must be among {FORMATS}, got {list(formats)}")
    anns = ws.annotated()
    if not any(a.regions for a in anns):
        raise ValueError("nothing to export: segment and correct at least one image first")
    out_dir = (out_root or ws.state_dir / "exports") / time.strftime("export_%Y%m%d_%H%M%S")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    report: dict = {"images": len(anns), "regions": sum(len(a.regions) for a in anns), "formats": list(formats)}
    if "coco_instances" in formats:
        coco, losses = build_coco_instances(anns, encoding)
        path = out_dir / "instances.json"
        atomic_write_json(path, coco)
        report["coco_annotations_checked"] = verify_coco_instances(path, anns, 0.0 if encoding == "polygons" else 1.0)
        report["encoding"] = encoding
        if losses:
            report["polygon_iou"] = losses
            report["polygon_iou_min"] = min(x["polygon_iou"] for x in losses)
    if "coco_panoptic" in formats:
        write_coco_panoptic(anns, out_dir)
        report["panoptic_checked"] = True
    report["png_files"] = write_masks_and_cutouts(ws, anns, out_dir, formats)
    atomic_write_json(out_dir / "export_report.json", report, indent=2)
    zip_path = zip_folder(out_dir, out_dir.with_suffix(".zip"))
    if mark_exported:
        for ann in anns:
            ann.state = "exported"
            ws.save(ann)
    return ExportResult(zip_path=zip_path, report=report)


def write_training_set(ws: Workspace, out_dir: Path) -> Path:
    """COCO instances of the corrected/exported images plus copies of the images, for `python -m train`.

    Layout: `<out_dir>/images/<name>` and `<out_dir>/annotations.json`. Only reviewed images are used:
    raw predictions would teach the model its own mistakes.
    """
    anns = [a for a in ws.annotated(("corrected", "exported")) if a.regions]
    if not anns:
        raise ValueError("no corrected images yet: correct or accept some masks before fine-tuning")
    coco, _ = build_coco_instances(anns, "rle")
    for ann in anns:
        target = out_dir / "images" / ann.image
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ws.image_path(ann.image), target)
    atomic_write_json(out_dir / "annotations.json", coco)
    verify_coco_instances(out_dir / "annotations.json", anns, 1.0)
    return out_dir
