"""Box and click prompts on a labeled folder: mask IoU of the model's prompted queries next to the classical baselines,
side by side in one run; prints JSON.

    OMP_NUM_THREADS=1 python -m bench.box_prompt --data ../shared/data/fruitsnuts
    OMP_NUM_THREADS=1 python -m bench.box_prompt --data ../shared/data/coco128 --holdout-only 0.2

For every annotation with a mask (crowd regions skipped), the mask IoU at full image size of:
  model_box            the model from the true box (tight box of the mask)
  model_box_in_box     the same mask with the pixels outside the box removed (a box prompt's object lies in it)
  model_box_jittered   the model from the box with each side moved by up to --jitter of the box size (seeded)
  model_1_click        the model from one positive click at the mask's most interior point
  model_3_clicks       the model after 3 clicks placed as interactive-segmentation benchmarks do (RITM protocol):
                       each next click goes to the most interior point of the current errors, positive when that
                       point is a missed object pixel, negative when it is a wrong background pixel
  grabcut_box          OpenCV GrabCut from the true box (qmn.grabcut)
  grabcut_model_seeded GrabCut from the true box seeded by the model's box mask
  box_as_mask          the true box itself filled as a mask
Clicks without a box each become their own prompted query (`Predictor.predict`), so a click result is the union
of the prompted segments. `--holdout-only F` keeps the trainer's held-out part of the folder
(`holdout_split(len, F, seed=0)`, as `train/data.py` does), e.g. 0.2 for coco128 in the default data spec.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from bench.interactive import box_mask, jitter_box, mask_iou
from qmn import Predictor, QueryMeldNet, load_model
from qmn.click_sim import Click, next_click
from qmn.data import Sample, load_dataset
from qmn.data.mixing import holdout_split
from qmn.grabcut import grabcut_from_box

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "qmn_tiny.safetensors"
METHODS = ("model_box", "model_box_in_box", "model_box_jittered", "model_1_click", "model_3_clicks", "grabcut_box",
           "grabcut_model_seeded", "box_as_mask")
NUM_CLICKS = 3


def predict_union(model: QueryMeldNet, image: np.ndarray, clicks: list[Click]) -> np.ndarray:
    """(H, W) bool union of the prompted segments the model returns for `clicks`."""
    pred = Predictor(model).predict(image, None, "instance", points=clicks)
    out = np.zeros(image.shape[:2], bool)
    for seg in pred.segments:
        out |= seg.mask
    return out


def evaluate_image(model: QueryMeldNet, sample: Sample, jitter: float,
                   rng: np.random.Generator) -> dict[str, list[float]]:
    """Per method, the mask IoU of each annotation with a mask in one image."""
    image = sample.image
    hw = image.shape[:2]
    anns = [a for a in sample.annotations if not a.iscrowd and a.mask is not None and a.mask.any()]
    scores: dict[str, list[float]] = {m: [] for m in METHODS}
    if not anns:
        return scores
    boxes = [np.asarray(a.box, np.float32) for a in anns]
    jittered = [jitter_box(b, jitter, rng, hw) for b in boxes]
    # prompted queries never see each other (decoder attention mask), so one call per image serves every box
    predictor = Predictor(model)
    from_box = [s.mask for s in predictor.predict(image, None, "instance", boxes=boxes).segments]
    from_jittered = [s.mask for s in predictor.predict(image, None, "instance", boxes=jittered).segments]
    for ann, box, box_pred, jit_pred in zip(anns, boxes, from_box, from_jittered):
        gt = ann.mask
        scores["model_box"].append(mask_iou(box_pred, gt))
        scores["model_box_in_box"].append(mask_iou(box_pred & box_mask(box, hw), gt))
        scores["model_box_jittered"].append(mask_iou(jit_pred, gt))
        scores["grabcut_box"].append(mask_iou(grabcut_from_box(image, box), gt))
        scores["grabcut_model_seeded"].append(mask_iou(grabcut_from_box(image, box, seed_mask=box_pred), gt))
        scores["box_as_mask"].append(mask_iou(box_mask(box, hw), gt))
        clicks: list[Click] = []
        pred = np.zeros(hw, bool)
        for n in range(1, NUM_CLICKS + 1):
            click = next_click(gt, pred)
            if click is not None:
                clicks.append(click)
            pred = predict_union(model, image, clicks)
            if n == 1:
                scores["model_1_click"].append(mask_iou(pred, gt))
        scores["model_3_clicks"].append(mask_iou(pred, gt))
    return scores


def evaluate(model: QueryMeldNet, samples: Iterable[Sample], jitter: float = 0.1, seed: int = 0,
             total: int | None = None) -> dict:
    """{"objects": n, "mask_iou": {method: {"mean", "median"}}} over every annotation with a mask in `samples`;
    a progress bar on stderr when `total` (the number of samples) is given."""
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {m: [] for m in METHODS}
    for sample in tqdm(samples, desc="images", total=total, disable=total is None, file=sys.stderr):
        for method, values in evaluate_image(model, sample, jitter, rng).items():
            scores[method].extend(values)
    summary = {m: {"mean": round(statistics.fmean(v), 4), "median": round(statistics.median(v), 4)} if v else None
               for m, v in scores.items()}
    return {"objects": len(scores["model_box"]), "mask_iou": summary}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.box_prompt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="labeled folder (any layout qmn.data.load_dataset reads)")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help=f"model (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--holdout-only", type=float, default=None, metavar="FRACTION",
                   help="evaluate only the trainer's held-out part for this holdout fraction (coco128: 0.2)")
    p.add_argument("--max-images", type=int, default=None, metavar="N", help="first N images (after the holdout)")
    p.add_argument("--jitter", type=float, default=0.1, help="box side jitter as a fraction of the box size (0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the box jitter (0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (cpu)")
    args = p.parse_args(argv)
    if not 0 <= args.jitter < 1:
        p.error(f"--jitter must be in [0, 1), got {args.jitter}")
    if args.max_images is not None and args.max_images < 1:
        p.error(f"--max-images must be >= 1, got {args.max_images}")
    if not args.checkpoint.is_file():
        p.error(f"--checkpoint {args.checkpoint}: no such file")
    try:
        dataset = load_dataset(args.data)
        indices = list(range(len(dataset)))
        if args.holdout_only is not None:
            indices = holdout_split(len(dataset), args.holdout_only, seed=0)[1]
        model = load_model(args.checkpoint, args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    indices = indices[:args.max_images]
    start = time.perf_counter()
    result = evaluate(model, (dataset[i] for i in indices), args.jitter, args.seed, total=len(indices))
    report = {"data": str(args.data), "checkpoint": str(args.checkpoint), "holdout_only": args.holdout_only,
              "images": len(indices), "jitter": args.jitter, "seed": args.seed, **result,
              "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
