"""Export the reviewed annotations of an opened folder: COCO instances (RLE or polygons), COCO panoptic,
mask PNGs, RGBA cut-outs, zipped. The COCO files are written by qmn.data's writers (the app's
annotations become Samples), then re-read with pycocotools and checked against the masks before
they are offered, so a download is never a file another tool cannot open.

Only what a person vouched for (accepted / edited masks; images marked done) is exported by default: the
report counts the proposals left out. `include_proposals=True` adds them, each COCO annotation carrying
`attributes: {"review": <state>}` so a reader can tell them apart. Only the images written are marked
exported."""
from __future__ import annotations

import json
import shutil
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO

from app.annotations import VOUCHED, ImageAnnotations, Region
from app.tools import cutout_rgba
from app.workspace import Workspace, sanitize_filename
from qmn.data.coco import write_coco_instances
from qmn.data.coco_panoptic import rgb_to_id, write_coco_panoptic
from qmn.data.image_io import read_image, write_png
from qmn.data.mask_codec import mask_iou
from qmn.data.sample import Annotation, Sample
from qmn.io_utils import atomic_path, atomic_write_json

FORMATS = ("coco_instances", "coco_panoptic", "mask_pngs", "cutouts")
ENCODINGS = ("rle", "polygons")


@dataclass
class ExportResult:
    zip_path: Path
    report: dict  # counts, per-annotation polygon IoU, checks passed


@dataclass
class Selected:
    """One image of an export and the regions of it that are written."""

    ann: ImageAnnotations
    regions: list[Region]


def export_regions(ann: ImageAnnotations, include_proposals: bool = False) -> list[Region]:
    """The regions of `ann` an export writes: vouched ones, plus proposals when asked; never rejected or empty."""
    wanted = VOUCHED + (("proposed",) if include_proposals else ())
    return [r for r in ann.regions if r.review in wanted and r.mask.any()]


def select_for_export(anns: Sequence[ImageAnnotations], include_proposals: bool = False) -> list[Selected]:
    """Images with something to write; an image marked done is written even with no mask (a checked negative)."""
    chosen = [Selected(a, export_regions(a, include_proposals)) for a in anns]
    return [c for c in chosen if c.regions or c.ann.done]


def label_names(selected: Sequence[Selected]) -> list[str]:
    """The export's categories: every label in use, sorted (ids 1..N in this order)."""
    return sorted({r.label for c in selected for r in c.regions})


def to_sample(ann: ImageAnnotations, regions: Sequence[Region]) -> Sample:
    """The data layer's form of one annotated image, for qmn.data's writers.

    Each Annotation keeps the region's score (COCO results field) and review state (COCO `attributes`);
    the image is not read: writers need only its size, so a zero-stride (H, W, 3) view stands in.
    """
    annotations = [Annotation.from_mask(r.label, r.mask, extra={"score": float(r.score),
                                                                "attributes": {"review": r.review}})
                   for r in regions if r.mask.any()]
    placeholder = np.broadcast_to(np.zeros((1, 1, 1), np.uint8), (ann.height, ann.width, 3))
    return Sample(placeholder, annotations, task="instance", image_id=ann.image)


def add_attributes(path: Path, samples: Sequence[Sample]) -> None:
    """Write each annotation's extra["attributes"] into the COCO file (qmn.data's writer numbers them 1..N in order)."""
    data = json.loads(path.read_text())
    for entry, annotation in zip(data["annotations"], (a for s in samples for a in s.annotations)):
        entry["attributes"] = annotation.extra.get("attributes", {})
    atomic_write_json(path, data)


def write_instances(samples: Sequence[Sample], path: Path, labels: Sequence[str], encoding: str) -> dict:
    """Write and verify a COCO instances file; returns the report entries (polygon IoU per annotation)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"mask encoding must be one of {ENCODINGS}, got {encoding!r}")
    written = write_coco_instances(samples, path, categories=list(labels), polygons=encoding == "polygons")
    add_attributes(path, samples)
    # RLE must come back exactly; polygons as well as the writer measured (its IoU report, 1.0 when none)
    report: dict = {"coco_annotations_checked": verify_coco_instances(path, samples, written.min_polygon_iou),
                    "encoding": encoding}
    if written.polygon_iou:
        image_of = [s.image_id for s in samples for _ in s.annotations]  # annotation ids run 1..N in this order
        report["polygon_iou"] = [{"annotation_id": i, "image": image_of[i - 1], "polygon_iou": round(iou, 4)}
                                 for i, iou in written.polygon_iou.items()]
        report["polygon_iou_min"] = round(written.min_polygon_iou, 4)
    return report


def verify_coco_instances(path: Path, samples: Sequence[Sample], min_iou: float) -> int:
    """Re-read `path` with pycocotools; every annotation's mask must match its region (IoU >= min_iou)."""
    coco = COCO(str(path))
    masks = [a.mask for s in samples for a in s.annotations]
    if len(coco.anns) != len(masks):
        raise ValueError(f"{path.name}: {len(coco.anns)} annotations re-read, {len(masks)} written")
    for ann_id, mask in zip(sorted(coco.anns), masks):
        iou = mask_iou(coco.annToMask(coco.anns[ann_id]).astype(bool), mask)
        if iou < min_iou:
            raise ValueError(f"{path.name}: annotation {ann_id} re-read with IoU {iou:.3f} < {min_iou}")
    return len(coco.anns)


def write_panoptic(samples: Sequence[Sample], out_dir: Path, labels: Sequence[str]) -> Path:
    """`panoptic.json` + `panoptic/<stem>.png` (every label a thing); re-reads every PNG and checks it.

    Panoptic segments cannot overlap: the writer gives shared pixels to the first annotation, so
    annotations go in by descending score and the more confident region wins.
    """
    by_score = [replace(s, annotations=sorted(s.annotations, key=lambda a: -a.extra["score"])) for s in samples]
    path = out_dir / "panoptic.json"
    write_coco_panoptic(by_score, path, thing_classes=labels, categories=list(labels))
    verify_panoptic(path)
    return path


def verify_panoptic(path: Path) -> None:
    """Each PNG's ids and pixel counts must equal its segments_info."""
    data = json.loads(path.read_text())
    for entry in data["annotations"]:
        ids = rgb_to_id(read_image(path.with_suffix("") / entry["file_name"]))  # (H, W, 3) -> (H, W)
        for seg in entry["segments_info"]:
            if int((ids == seg["id"]).sum()) != seg["area"]:
                raise ValueError(f"{entry['file_name']}: segment {seg['id']} area differs after re-reading")


def region_file_name(region_id: int, label: str) -> str:
    return f"{region_id:03d}_{sanitize_filename(label)}.png"


def write_masks_and_cutouts(ws: Workspace, selected: Sequence[Selected], out_dir: Path, formats: Sequence[str]) -> int:
    """`masks/<stem>/<id>_<label>.png` (0/255), `cutouts/<stem>/<id>_<label>.png` (RGBA) and, for regions refined
    with matting, `alpha/<stem>/<id>_<label>.png` (the matte, 0-255) beside them; returns files written."""
    written = 0
    for chosen in selected:
        stem = Path(chosen.ann.image).stem
        image = ws.read_image(chosen.ann.image) if "cutouts" in formats and chosen.regions else None
        for r in chosen.regions:
            name = region_file_name(r.id, r.label)
            if "mask_pngs" in formats:
                write_png(out_dir / "masks" / stem / name, r.mask.astype(np.uint8) * 255)
                written += 1
            if image is not None:
                write_png(out_dir / "cutouts" / stem / name, cutout_rgba(image, r))
                written += 1
            if r.alpha is not None:
                write_png(out_dir / "alpha" / stem / name, np.clip(r.alpha * 255 + 0.5, 0, 255).astype(np.uint8))
                written += 1
    return written


def zip_folder(folder: Path, zip_path: Path) -> Path:
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(folder).as_posix())
    return zip_path


def export_report(anns: Sequence[ImageAnnotations], selected: Sequence[Selected], formats: Sequence[str]) -> dict:
    """Counts a user checks an export by: what went in (by review state) and which proposals stayed out."""
    written = [r for c in selected for r in c.regions]
    return {
        "images": len(selected),
        "annotations": len(written),
        "by_review": {state: sum(r.review == state for r in written) for state in sorted({r.review for r in written})},
        "proposals_left_out": sum(a.count("proposed") for a in anns) - sum(r.review == "proposed" for r in written),
        "images_left_out": len(anns) - len(selected),
        "formats": list(formats),
    }


def export_folder(
    ws: Workspace,
    formats: Sequence[str] = FORMATS,
    encoding: str = "rle",
    out_root: Path | None = None,
    include_proposals: bool = False,
) -> ExportResult:
    """Export the reviewed annotations of `ws` into `<out_root>/<timestamp>/` and zip it; mark those images exported.

    Raises ValueError when there is nothing to export or a format is unknown.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"export formats must be among {FORMATS}, got {list(formats)}")
    anns = ws.annotated()
    selected = select_for_export(anns, include_proposals)
    if not any(c.regions for c in selected):
        pending = sum(a.count("proposed") for a in anns)
        raise ValueError(f"nothing to export: no accepted or edited masks yet ({pending} proposals wait for review); "
                         "accept masks, or export proposals explicitly")
    out_dir = (out_root or ws.state_dir / "exports") / time.strftime("export_%Y%m%d_%H%M%S")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    report = export_report(anns, selected, formats)
    samples, labels = [to_sample(c.ann, c.regions) for c in selected], label_names(selected)
    if "coco_instances" in formats:
        report.update(write_instances(samples, out_dir / "instances.json", labels, encoding))
    if "coco_panoptic" in formats:
        write_panoptic(samples, out_dir, labels)
        report["panoptic_checked"] = True
    report["png_files"] = write_masks_and_cutouts(ws, selected, out_dir, formats)
    atomic_write_json(out_dir / "export_report.json", report, indent=2)
    zip_path = zip_folder(out_dir, out_dir.with_suffix(".zip"))
    for chosen in selected:
        chosen.ann.exported = True
        ws.save(chosen.ann)
    return ExportResult(zip_path=zip_path, report=report)
