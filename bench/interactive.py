"""Interactive segmentation on held-out real photos, as the literature measures it (RITM / SimpleClick / SAM); JSON.

    OMP_NUM_THREADS=2 python -m bench.interactive --max-instances 40

Instances: every non-crowd mask with area >= --min-area px (32 x 32: COCO's medium and large) in the held-out part
of each set, the trainer's split `holdout_split(n, 0.2, seed=0)` (as `train/data.py`, the default data spec and
`bench/finetune_real.py` use): coco128 (../shared/data/coco128) and fruitsnuts (../shared/data/fruitsnuts); the
first --max-instances per set in image order.

Click protocol (`qmn.click_sim.next_click`, RITM's): each click at the deepest pixel (distance-transform maximum) of
the larger error region, positive in a missed part, negative in a false part, at most --max-clicks (20); NoC@85 /
NoC@90 = clicks to reach that IoU (the cap when never reached), IoU after 1 / 3 / 5 clicks. Click methods:
  model             the model's click query on the whole photo (Predictor.predict(points=...))
  model_crop        the same on a crop around the clicks and the previous mask ("look closely", qmn.prompt_crop)
  grabcut           GrabCut seeded by the clicks and the previous mask (qmn.grabcut.grabcut_from_clicks)
  grabcut_local     the same, but only the piece it changes under the newest click is taken (grabcut_click_update)
Box methods, from the true (tight) box and from a jittered one (each side moved by up to --jitter of the box size,
seeded): box (the bare box as a mask), grabcut (guarded, qmn.grabcut), grabcut_unguarded, model (whole photo),
model_crop (look closely: the predictor's default box path). Latency: median seconds of one more click (the 2nd)
per click method on a held-out photo
resized to 1280 x 1024. Numbers are measured on a shared 2-core machine under load: read speed as an upper bound.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from qmn import load_model
from qmn.click_sim import Click, next_click
from qmn.data import load_dataset
from qmn.data.mixing import holdout_split
from qmn.grabcut import grabcut_click_update, grabcut_from_box, grabcut_from_clicks
from qmn.predictor import Predictor
from qmn.prompt_crop import click_extent, segment_on_crop

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "assets" / "qmn_tiny.safetensors"
SETS = {name: ROOT.parent / "shared" / "data" / name for name in ("coco128", "fruitsnuts")}
HOLDOUT = 0.2
CLICK_METHODS = ("model", "model_crop", "grabcut", "grabcut_local")
BOX_METHODS = ("box", "grabcut", "grabcut_unguarded", "model", "model_crop")
IOU_AT = (1, 3, 5)
NOC_AT = (0.85, 0.90)
ClickFn = Callable[[np.ndarray, list[Click], np.ndarray], np.ndarray]  # (image, clicks, previous) -> mask
BoxFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (image, xyxy box) -> mask


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def box_mask(box: Sequence[float], hw: tuple[int, int]) -> np.ndarray:
    """The xyxy pixel box (x2 / y2 exclusive) filled as an (H, W) bool mask."""
    h, w = hw
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = True
    return out


def jitter_box(box: Sequence[float], fraction: float, rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """xyxy box with each side moved by uniform(-fraction, fraction) x the box width (x sides) or height (y sides),
    clipped to the image and kept at least one pixel wide."""
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    dx0, dy0, dx1, dy1 = rng.uniform(-fraction, fraction, 4) * np.array([bw, bh, bw, bh])
    h, w = hw
    nx0, ny0 = np.clip(x0 + dx0, 0, w - 1), np.clip(y0 + dy0, 0, h - 1)
    nx1, ny1 = np.clip(x1 + dx1, nx0 + 1, w), np.clip(y1 + dy1, ny0 + 1, h)
    return np.array([nx0, ny0, nx1, ny1], np.float32)


# ---------------------------------------------------------------------------------------------- methods
def _union(pred, hw: tuple[int, int]) -> np.ndarray:
    out = np.zeros(hw, bool)
    for seg in pred.segments:
        out |= seg.mask
    return out


def model_clicks(model: Predictor) -> ClickFn:
    return lambda image, clicks, prev: _union(model.predict(image, None, "instance", points=clicks), image.shape[:2])


def model_clicks_on_crop(model: Predictor) -> ClickFn:
    def run(image: np.ndarray, clicks: list[Click], prev: np.ndarray) -> np.ndarray:
        extent = click_extent(clicks, prev, image.shape[:2])
        if extent is None:
            return np.zeros(image.shape[:2], bool)
        def segment(crop: np.ndarray, _, pts: list[Click]) -> list[np.ndarray]:
            return [_union(model.predict(crop, None, "instance", points=pts), crop.shape[:2])]
        return segment_on_crop(segment, image, extent, clicks=clicks)[0]
    return run


def model_box(model: Predictor, look_closely: bool) -> BoxFn:
    return lambda image, box: model.predict(image, None, "instance", boxes=[box],
                                            look_closely=look_closely).segments[0].mask


def click_methods(model: Predictor) -> dict[str, ClickFn]:
    return {"model": model_clicks(model), "model_crop": model_clicks_on_crop(model),
            "grabcut": lambda image, clicks, prev: grabcut_from_clicks(image, clicks, prev),
            "grabcut_local": lambda image, clicks, prev: grabcut_click_update(image, clicks, prev)}


def box_methods(model: Predictor) -> dict[str, BoxFn]:
    return {"box": lambda image, box: box_mask(box, image.shape[:2]),
            "grabcut": lambda image, box: grabcut_from_box(image, box),
            "grabcut_unguarded": lambda image, box: grabcut_from_box(image, box, guard=False),
            "model": model_box(model, False), "model_crop": model_box(model, True)}


# ---------------------------------------------------------------------------------------------- protocol
def click_curve(fn: ClickFn, image: np.ndarray, gt: np.ndarray, max_clicks: int, stop_at: float) -> list[float]:
    """IoU after each click of the RITM protocol; stops early once IoU >= stop_at and every IoU_AT click is done
    (the rest of the curve is then taken as flat, as NoC needs only the first crossing)."""
    clicks: list[Click] = []
    pred = np.zeros(gt.shape, bool)
    ious: list[float] = []
    for n in range(max_clicks):
        click = next_click(gt, pred)
        if click is None:  # exact already
            ious.append(1.0)
        else:
            clicks.append(click)
            pred = fn(image, clicks, pred)
            ious.append(mask_iou(pred, gt))
        if ious[-1] >= stop_at and n + 1 >= max(IOU_AT):
            break
    return ious


def noc(curve: list[float], target: float, cap: int) -> int:
    return next((i + 1 for i, v in enumerate(curve) if v >= target), cap)


def instances(root: Path, min_area: int, limit: int | None,
              part: str = "heldout") -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, gt mask, tight xyxy box) of every instance of `root` with area >= min_area in the held-out part (or,
    to tune on, the training part)."""
    dataset = load_dataset(root, task="instance")
    count = 0
    train, heldout = holdout_split(len(dataset), HOLDOUT, seed=0)
    for i in heldout if part == "heldout" else train:
        sample = dataset[i]
        for ann in sample.annotations:
            if ann.iscrowd or ann.mask is None or int(ann.mask.sum()) < min_area:
                continue
            if limit is not None and count >= limit:
                return
            count += 1
            yield sample.image, ann.mask, np.asarray(ann.box, np.float32)


def summarise(values: list[float]) -> float:
    return round(statistics.fmean(values), 4) if values else float("nan")


def evaluate_set(model: Predictor, root: Path, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    clickers = {k: v for k, v in click_methods(model).items() if k in args.click_methods}
    boxers = {k: v for k, v in box_methods(model).items() if k in args.box_methods}
    curves: dict[str, list[list[float]]] = {m: [] for m in clickers}
    box_scores: dict[str, dict[str, list[float]]] = {kind: {m: [] for m in boxers} for kind in ("true", "jittered")}
    todo = list(instances(root, args.min_area, args.max_instances, args.part))
    for image, gt, box in tqdm(todo, desc=root.name, file=sys.stderr):
        jittered = jitter_box(box, args.jitter, rng, gt.shape)
        for kind, b in (("true", box), ("jittered", jittered)):
            for name, fn in boxers.items():
                box_scores[kind][name].append(mask_iou(fn(image, b), gt))
        for name, fn in clickers.items():
            curves[name].append(click_curve(fn, image, gt, args.max_clicks, max(NOC_AT)))
    clicks_report = {}
    for name, cs in curves.items():
        entry = {f"noc@{int(t * 100)}": summarise([noc(c, t, args.max_clicks) for c in cs]) for t in NOC_AT}
        entry.update({f"iou@{k}": summarise([c[min(k, len(c)) - 1] for c in cs]) for k in IOU_AT})
        clicks_report[name] = entry
    return {"instances": len(todo), "clicks": clicks_report,
            "box_iou": {kind: {m: summarise(v) for m, v in by.items()} for kind, by in box_scores.items()}}


def click_latency(model: Predictor, root: Path, repeats: int, methods: Sequence[str]) -> dict[str, float]:
    """Median seconds of the 2nd click (one click after a first) per click method, on a 1280 x 1024 photo."""
    image, gt, _ = next(instances(root, 32 * 32, 1))
    big = cv2.resize(image, (1280, 1024), interpolation=cv2.INTER_LINEAR)
    gt = cv2.resize(gt.astype(np.uint8), (1280, 1024), interpolation=cv2.INTER_NEAREST) > 0
    out = {}
    for name, fn in click_methods(model).items():
        if name not in methods:
            continue
        first = next_click(gt, np.zeros_like(gt))
        prev = fn(big, [first], np.zeros_like(gt))
        second = next_click(gt, prev) or first
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(big, [first, second], prev)
            times.append(time.perf_counter() - start)
        out[name] = round(statistics.median(times), 4)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.interactive", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help=f"model (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS), help="held-out sets (both)")
    p.add_argument("--max-instances", type=int, default=None, metavar="N", help="first N instances per set")
    p.add_argument("--max-clicks", type=int, default=20, help="click cap (20, as RITM)")
    p.add_argument("--min-area", type=int, default=32 * 32, help="smallest instance area in px (32 x 32)")
    p.add_argument("--jitter", type=float, default=0.1, help="box side jitter, fraction of the box size (0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the box jitter (0)")
    p.add_argument("--latency-repeats", type=int, default=5, help="timed clicks per method (5; 0 skips latency)")
    p.add_argument("--click-methods", nargs="*", default=list(CLICK_METHODS), choices=CLICK_METHODS,
                   help="click methods to run (all)")
    p.add_argument("--box-methods", nargs="*", default=list(BOX_METHODS), choices=BOX_METHODS,
                   help="box methods to run (all)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    p.add_argument("--part", choices=("heldout", "train"), default="heldout",
                   help="which part of each set: heldout (report) or train (to tune on; never report it)")
    args = p.parse_args(argv)
    if not args.checkpoint.is_file():
        p.error(f"--checkpoint {args.checkpoint}: no such file")
    if args.max_instances is not None and args.max_instances < 1:
        p.error(f"--max-instances must be >= 1, got {args.max_instances}")
    torch.set_num_threads(args.threads)
    model = Predictor(load_model(args.checkpoint))
    report: dict = {"checkpoint": str(args.checkpoint), "command": "python -m bench.interactive " +
                    " ".join(argv if argv is not None else sys.argv[1:]), "holdout": HOLDOUT,
                    "part": args.part, "min_area": args.min_area, "max_clicks": args.max_clicks, "jitter": args.jitter, "sets": {}}
    start = time.perf_counter()
    for name in args.sets:
        if not SETS[name].is_dir():
            report["sets"][name] = f"skipped: {SETS[name]} not found"
            continue
        report["sets"][name] = evaluate_set(model, SETS[name], args)
    if args.latency_repeats > 0 and SETS["coco128"].is_dir():
        report["click_latency_s_1280x1024"] = click_latency(model, SETS["coco128"], args.latency_repeats,
                                                                args.click_methods)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)  # the machine is shared: speed under load
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
