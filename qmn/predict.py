"""`python -m qmn.predict`: label a folder (or files) of images with a checkpoint, resumable and shardable.

    python -m qmn.predict --images photos/ --prompts "person, dog, sky" --task panoptic --out labels/
    # a huge folder on 4 workers (a Slurm array, a shell loop, torchrun ranks); the last one to finish merges:
    for i in 0 1 2 3; do python -m qmn.predict --images photos/ --prompts dog --out labels/ --shard $i/4 --resume & done

Output folder layout:
    per_image/<image>.json      one record per image (segments with RLE masks, or the read error); written
                                atomically and LAST, so its presence means the image is done (--resume skips it)
    masks/<image stem>/<k>_<label>.png   0/255 PNG per segment (qmn.data.masks)
    overlays/<image stem>.png   masks tinted and labelled on the photo
    alpha/, cutouts/            with --refine: alpha matte PNG and RGBA cut-out per mask, named as in masks/
    predictions.json            merged COCO instances (qmn.data.coco: annotations carry "score", so the list
                                is also a COCO results list; referring phrases are in "sentences")
    panoptic.json + panoptic/   task panoptic: COCO panoptic JSON and id PNGs (qmn.data.coco_panoptic)
    summary.json                counts, unreadable images and the merged files

Sharding: shard i/n takes the images whose index in the sorted list is i modulo n. Merging: every run
ends by checking whether the per-image records of ALL images exist; the run that finds them complete
writes the merged files (merging twice writes identical files atomically). `--merge` only merges.
Memory stays bounded: images stream one at a time and masks leave memory once written.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import numpy as np
from tqdm import tqdm

from qmn.data.coco import write_coco_instances
from qmn.data.coco_panoptic import write_coco_panoptic
from qmn.data.image_io import IMAGE_EXTENSIONS, ImageError, read_image, write_png
from qmn.data.mask_codec import decode_rle, encode_rle
from qmn.data.masks import write_mask_pngs
from qmn.data.sample import TASKS
from qmn.io_utils import atomic_write_json, safe_join
from qmn.structures import Prediction, Segment

if TYPE_CHECKING:
    from qmn.predictor import Predictor

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "qmn_tiny.safetensors"
RECORD_DIR = "per_image"


# ------------------------------------------------------------------------------------------------ inputs


def list_images(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """Sorted (key, path) pairs; key = path relative to the given folder (recursive), or the file name.

    Raises ValueError for a missing input or two inputs giving the same key.
    """
    found: dict[str, Path] = {}
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            pairs = [
                (p.relative_to(item).as_posix(), p)
                for p in item.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
            ]
        elif item.is_file():
            pairs = [(item.name, item)]
        else:
            raise ValueError(f"--images: {item} is neither an image file nor a folder")
        for key, path in pairs:
            if key in found and found[key] != path:
                raise ValueError(f"--images: {path} and {found[key]} would both be written as {key!r}")
            found[key] = path
    return sorted(found.items())


def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" -> (i, n) with 0 <= i < n."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not int(match.group(2)) or int(match.group(1)) >= int(match.group(2)):
        raise ValueError(f"--shard must be i/n with 0 <= i < n, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def shard_of(items: Sequence, index: int, count: int) -> list:
    """Every item whose position in `items` is `index` modulo `count`."""
    return list(items[index::count])


def prompts_from_cli(text: str, task: str) -> list[str]:
    """--prompts -> list by the one prompt rule (qmn/prompts.py): class names separated by commas; referring
    phrases by ';' or new lines (a phrase may hold commas)."""
    from qmn.prompts import parse_prompts

    return parse_prompts(text, task)


# ------------------------------------------------------------------------------------------------ outputs


def _record_path(out: Path, key: str) -> Path:
    return safe_join(out, f"{RECORD_DIR}/{key}.json")


def _palette(n: int) -> np.ndarray:
    """n distinct RGB colours (golden-ratio hues), uint8 (n, 3)."""
    import cv2

    hues = (np.arange(n) * 0.618033988749895 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full(n, 200, np.uint8), np.full(n, 255, np.uint8)], axis=1)[None]  # (1, n, 3)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def draw_overlay(image: np.ndarray, prediction: Prediction) -> np.ndarray:
    """The photo (H, W, 3) with each segment's mask tinted, outlined and labelled (boxes for detection)."""
    import cv2

    canvas = image.astype(np.float32)
    colours = _palette(max(1, len(prediction.segments)))
    for seg, colour in zip(prediction.segments, colours):
        if seg.mask is not None:
            canvas[seg.mask] = 0.5 * canvas[seg.mask] + 0.5 * colour
    canvas = canvas.astype(np.uint8)
    for seg, colour in zip(prediction.segments, colours):
        colour = tuple(int(c) for c in colour)
        if seg.mask is not None:
            contours, _ = cv2.findContours(seg.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, colour, 1)
        x1, y1, x2, y2 = (int(round(float(v))) for v in seg.box)
        if seg.mask is None:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2)
        text, origin = f"{seg.label} {seg.score:.2f}", (x1, max(10, y1 + 10))
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 3)  # dark halo: readable anywhere
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1)
    return canvas


def _segment_record(seg: Segment, mask: Optional[np.ndarray]) -> dict:
    """JSON of one segment; `mask` is its pixels (for panoptic: the pixels it won in the id map)."""
    record = {
        "id": int(seg.id),
        "label": seg.label,
        "score": float(seg.score),
        "query_type": seg.query_type,
        "box": [float(v) for v in seg.box],
    }
    if mask is not None:
        record["segmentation"] = encode_rle(mask)
    return record


def _prediction_from_record(record: dict) -> Prediction:
    """Rebuild the Prediction of a per-image record (masks decoded; panoptic map painted from disjoint masks)."""
    shape = (record["height"], record["width"])
    panoptic = np.zeros(shape, np.int32) if record["task"] == "panoptic" else None
    segments = []
    for s in record["segments"]:
        mask = decode_rle(s["segmentation"], *shape) if "segmentation" in s else None
        if panoptic is not None and mask is not None:
            panoptic[mask] = s["id"]
        segments.append(Segment(s["label"], s["score"], mask, np.array(s["box"], np.float32), s["query_type"], id=s["id"]))
    return Prediction(record["task"], record["prompts"], segments, panoptic=panoptic, image_size=shape)


class Labeler:
    """Runs the model on one image and writes all of that image's outputs, the record last."""

    def __init__(self, predictor: "Predictor", prompts: list[str], task: str, out: Path, threshold: Optional[float],
                 refine: bool) -> None:
        self.predictor, self.prompts, self.task, self.out = predictor, prompts, task, out
        self.threshold = threshold
        self.refine = _matting_functions() if refine else None

    def label(self, key: str, path: Path) -> dict:
        """Predict and write one image; an unreadable image gives a record with "error" instead of a crash."""
        try:
            image = read_image(path)
        except ImageError as error:
            record = {"file_name": key, "error": str(error)}
            atomic_write_json(_record_path(self.out, key), record)
            return record
        prediction = self.predictor.predict(image, self.prompts, self.task, threshold=self.threshold)
        stem = Path(key).with_suffix("").as_posix()
        for folder in ("masks", "alpha", "cutouts"):  # a rerun without --resume must not leave older segments behind
            shutil.rmtree(safe_join(self.out, f"{folder}/{stem}"), ignore_errors=True)
        masks = [
            prediction.panoptic == seg.id if self.task == "panoptic" and prediction.panoptic is not None else seg.mask
            for seg in prediction.segments
        ]
        mask_paths = write_mask_pngs((key, prediction), self.out / "masks")  # one per segment with a mask, in order
        if self.refine is not None:
            refine, cutout = self.refine
            for mask, mask_path in zip((m for m in masks if m is not None), mask_paths):
                relative = mask_path.relative_to(self.out / "masks").as_posix()
                alpha = refine(image, mask)  # (H, W) float in [0, 1]
                write_png(safe_join(self.out, f"alpha/{relative}"), np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8))
                write_png(safe_join(self.out, f"cutouts/{relative}"), cutout(image, alpha))
        write_png(safe_join(self.out, f"overlays/{stem}.png"), draw_overlay(image, prediction))
        record = {
            "file_name": key,
            "height": image.shape[0],
            "width": image.shape[1],
            "task": self.task,
            "prompts": self.prompts,
            "segments": [_segment_record(seg, mask) for seg, mask in zip(prediction.segments, masks)],
        }
        atomic_write_json(_record_path(self.out, key), record)
        return record


def _matting_functions():
    """(refine(image, mask) -> alpha float (H, W), cutout(image, alpha) -> RGBA uint8), imported lazily."""
    try:
        from qmn.matting import cutout, refine
    except ImportError as error:
        raise ValueError(f"--refine needs qmn.matting.refine and qmn.matting.cutout, which are unavailable ({error})")
    return refine, cutout


# ------------------------------------------------------------------------------------------------ merge


def _records(out: Path, keys: Sequence[str]) -> Iterator[dict]:
    for key in keys:
        path = _record_path(out, key)
        try:
            yield json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: corrupt per-image record ({error}); delete it and rerun with --resume") from None


def missing_records(out: Path, keys: Sequence[str]) -> list[str]:
    return [k for k in keys if not _record_path(out, k).is_file()]


def merge(out: Path, keys: Sequence[str], task: str, prompts: list[str], stuff: Sequence[str] = ()) -> dict:
    """Merge all per-image records into predictions.json (+ panoptic.json and panoptic/) and summary.json.

    Records stream one at a time (masks are decoded per image); the writers keep only the RLE text.
    Class prompts fix the category ids (1..N in prompt order); referring phrases become the categories and
    the "sentences" of their annotations. `stuff` names the classes marked isthing 0 in panoptic.json.
    """
    missing = missing_records(out, keys)
    if missing:
        raise ValueError(f"cannot merge {out}: {len(missing)} images have no per-image record yet, e.g. {missing[0]!r}")
    for record in _records(out, keys):
        if "error" not in record and (record["task"], record["prompts"]) != (task, prompts):
            raise ValueError(
                f"{_record_path(out, record['file_name'])} was made for task {record['task']!r} with prompts "
                f"{record['prompts']}, not {task!r} with {prompts}: use a new --out, or rerun without --resume"
            )
    categories = None if task == "referring" else prompts
    unreadable = [{"file_name": r["file_name"], "error": r["error"]} for r in _records(out, keys) if "error" in r]

    def predictions() -> Iterator[tuple[str, Prediction]]:
        for record in _records(out, keys):
            if "error" not in record:
                yield record["file_name"], _prediction_from_record(record)

    report = write_coco_instances(predictions(), out / "predictions.json", categories=categories)
    files = {"instances": str(report.path)}
    if task == "panoptic":
        things = [p for p in prompts if p not in set(stuff)]
        panoptic = write_coco_panoptic(predictions(), out / "panoptic.json", out / "panoptic", thing_classes=things, categories=prompts)
        files.update(panoptic=str(panoptic.path), panoptic_pngs=str(out / "panoptic"))
    summary = {
        "task": task,
        "prompts": prompts,
        "num_images": len(keys),
        "num_unreadable": len(unreadable),
        "unreadable": unreadable,
        "num_segments": report.annotations,
        "files": files,
    }
    atomic_write_json(out / "summary.json", summary, indent=2)
    return summary


# ------------------------------------------------------------------------------------------------ CLI


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the module docstring (examples, layout) kept as written."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qmn.predict",
        description="Segment a folder or list of images with a QueryMeldNet checkpoint; writes COCO JSON, mask PNGs "
        "and overlays. Resumable (--resume) and shardable (--shard i/n); the last shard to finish merges.",
        epilog=__doc__,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="model .safetensors file")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders (searched recursively)")
    parser.add_argument(
        "--prompts",
        default="",
        help="class names separated by commas ('person, dog, sky'); for --task referring, phrases separated by ';'; "
        "none for --task foreground",
    )
    parser.add_argument("--task", choices=TASKS, default="panoptic")
    parser.add_argument("--stuff", default="", help="comma-separated prompts that are stuff (isthing 0 in panoptic.json)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--threshold", type=float, default=None,
                        help="minimum segment score (default: the checkpoint's calibrated score_threshold)")
    parser.add_argument("--shard", default="0/1", help="i/n: process the images whose sorted index %% n == i")
    parser.add_argument("--resume", action="store_true", help="skip images whose per-image record already exists")
    parser.add_argument("--merge", action="store_true", help="only merge existing per-image records (no model run)")
    parser.add_argument("--refine", action="store_true",
                        help="also write matting alpha PNGs and RGBA cut-outs (qmn.matting.refine: solved in a band "
                        "where a mask's edge is ragged; a smooth edge keeps the hard mask)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return parser


def run(args: argparse.Namespace) -> dict:
    """Label this shard's images, then merge if every image of every shard is done; returns a status dict."""
    prompts = ["foreground"] if args.task == "foreground" else prompts_from_cli(args.prompts, args.task)
    if args.task != "foreground" and not prompts:
        raise ValueError(f"--prompts is required for --task {args.task}")
    shard_index, shard_count = parse_shard(args.shard)
    images = list_images(args.images)
    if not images:
        raise ValueError(f"--images: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    keys = [key for key, _ in images]
    if not args.merge:
        todo = shard_of(images, shard_index, shard_count)
        if args.resume:
            todo = [(k, p) for k, p in todo if not _record_path(args.out, k).is_file()]
        if todo:
            from qmn import Predictor, load_model

            predictor = Predictor(load_model(args.checkpoint, device=args.device))
            labeler = Labeler(predictor, prompts, args.task, args.out, args.threshold, args.refine)
            unreadable = 0
            progress = tqdm(todo, desc=f"predict {args.task} shard {shard_index}/{shard_count}", unit="img")
            for key, path in progress:
                unreadable += "error" in labeler.label(key, path)
                progress.set_postfix(unreadable=unreadable)
    missing = missing_records(args.out, keys)
    if missing:
        if args.merge:
            raise ValueError(f"--merge: {len(missing)} images have no per-image record yet, e.g. {missing[0]!r}")
        return {"merged": False, "waiting_for": len(missing)}
    stuff = [p.strip() for p in args.stuff.split(",") if p.strip()]
    return {"merged": True, **merge(args.out, keys, args.task, prompts, stuff)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        status = run(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if status["merged"]:
        print(
            f"{status['num_images']} images ({status['num_unreadable']} unreadable), {status['num_segments']} segments "
            f"-> {status['files']['instances']} in {time.perf_counter() - started:.1f}s"
        )
        for item in status["unreadable"]:
            print(f"unreadable: {item['file_name']}: {item['error']}", file=sys.stderr)
    else:
        print(f"shard done; {status['waiting_for']} images of other shards still to do (the last shard merges)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
