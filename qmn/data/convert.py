"""Convert a labeled folder to another layout: `python -m qmn.data.convert SRC --out DIR --to FORMAT`.

Public API:
    convert(src, out_dir, to, *, task=None, polygons=False, things=None (names | "all" | "none"), index_map=False,
            link=False, overwrite=False) -> dict     (the summary the CLI prints as JSON)
    main(argv=None) -> int

Output layouts (each one readable again by `qmn.data.load_dataset`, except masks):
    coco           images/ + annotations.json          (file names kept; RLE, or --polygons)
    coco-panoptic  images/ + panoptic.json + panoptic/ (PNG per image)
    yolo-seg       images/ + labels/*.txt + classes.txt
    semantic       images/ + labels/*.png + classes.txt
    masks          <stem>/<k>_<label>.png per segment, or --index-map: <stem>.png + <stem>.json
Images are copied (or hard-linked with --link) under their original relative names.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from tqdm import tqdm

from qmn.data.coco import output_path, write_coco_instances
from qmn.data.coco_panoptic import write_coco_panoptic
from qmn.data.folder import Dataset, load_dataset
from qmn.data.masks import write_mask_pngs
from qmn.data.sample import TASKS, Sample
from qmn.data.semantic_folder import write_semantic_folder
from qmn.data.yolo import write_yolo_seg
from qmn.io_utils import atomic_path, safe_join

TARGETS = ("coco", "coco-panoptic", "yolo-seg", "semantic", "masks")


def convert(
    src: Union[str, Path],
    out_dir: Union[str, Path],
    to: str,
    *,
    task: Optional[str] = None,
    polygons: bool = False,
    things: Union[None, str, Sequence[str]] = None,
    index_map: bool = False,
    link: bool = False,
    overwrite: bool = False,
) -> dict:
    """Read `src` with load_dataset, write it to `out_dir` as `to`; returns a summary dict.

    `things` (panoptic only): the thing class names, or "all" / "none"; default: the source's own
    isthing flags, else every class for instance data and none for semantic data.
    """
    if to not in TARGETS:
        raise ValueError(f"unknown target {to!r}; expected one of {', '.join(TARGETS)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"{out_dir} is not empty; choose an empty folder or pass --overwrite")
    dataset = load_dataset(src, task)
    samples = _with_images(dataset, out_dir, copy=to != "masks", link=link)
    summary: dict = {"source": str(dataset.root), "format": dataset.format, "task": dataset.task, "to": to}
    if to == "masks":
        files = sum(len(write_mask_pngs(sample, out_dir, index_map=index_map)) for sample in samples)
        summary.update(images=len(dataset), files=files)
    else:
        if to == "coco":
            report = write_coco_instances(samples, out_dir / "annotations.json", polygons=polygons)
        elif to == "coco-panoptic":
            report = write_coco_panoptic(samples, out_dir / "panoptic.json", thing_classes=_things(dataset, things))
        elif to == "yolo-seg":
            report = write_yolo_seg(samples, out_dir)
        else:
            report = write_semantic_folder(samples, out_dir)
        summary.update(images=report.images, annotations=report.annotations, dropped=report.dropped)
        if report.polygon_iou:
            ious = list(report.polygon_iou.values())
            summary.update(polygon_iou_min=round(min(ious), 6), polygon_iou_mean=round(sum(ious) / len(ious), 6))
    summary["skipped"] = len(dataset.skipped)
    return summary


def _things(dataset: Dataset, things: Union[None, str, Sequence[str]]) -> list[str]:
    if things == "all":
        return list(dataset.vocabulary)
    if things == "none":
        return []
    if things is not None:
        return list(things)
    if dataset.thing_classes is not None:
        return list(dataset.thing_classes)
    return [] if dataset.task == "semantic" else list(dataset.vocabulary)


def _with_images(dataset: Dataset, out_dir: Path, copy: bool, link: bool) -> Iterator[Sample]:
    """The dataset's Samples with a progress bar, placing each image file under out_dir/images."""
    for sample in tqdm(dataset, desc="converting", unit="img"):
        if copy:
            source = safe_join(dataset.source.image_dir, sample.image_id)
            _place(source, output_path(out_dir / "images", sample.image_id), link)
        yield sample


def _place(source: Path, target: Path, link: bool) -> None:
    """Hard-link `source` to `target` when asked and possible (same disk), else copy atomically."""
    if link:
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
            return
        except OSError:
            pass  # another file system or no link support: copy instead
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qmn.data.convert",
        description="Convert a labeled image folder (COCO, COCO panoptic, YOLO-seg or semantic label maps) "
        "to another layout. Prints a JSON summary.",
        epilog="example: python -m qmn.data.convert ../shared/data/coco128 --out /tmp/coco128_coco --to coco",
    )
    parser.add_argument("src", help="labeled folder (or a COCO JSON file); see qmn.data.folder for the layouts")
    parser.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--to", required=True, choices=TARGETS, help="output layout")
    parser.add_argument("--task", choices=TASKS, help="read the labels as this task (default: the source's)")
    parser.add_argument("--polygons", action="store_true", help="coco: polygons instead of RLE (IoU kept is reported)")
    parser.add_argument("--things", help="coco-panoptic: comma-separated thing classes, or 'all' / 'none'")
    parser.add_argument("--index-map", action="store_true", help="masks: one index PNG + JSON legend per image")
    parser.add_argument("--link", action="store_true", help="hard-link images instead of copying when possible")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    args = parser.parse_args(argv)
    things = args.things if args.things in (None, "all", "none") else [t.strip() for t in args.things.split(",")]
    try:
        summary = convert(
            args.src, args.out, args.to, task=args.task, polygons=args.polygons, things=things,
            index_map=args.index_map, link=args.link, overwrite=args.overwrite,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
