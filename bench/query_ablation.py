"""Query ablation (paper Table 2, §4.1) at our scale: learnable-only vs conditional-only vs query meld, same total
queries, same data (things + stuff + referring), same steps and seed. Trains the three models with `python -m train`,
evaluates them on held-out synthetic scenes of another seed, writes JSON and a markdown table.

    python -m qmn.data.synth --out runs/synth --num-images 1000 --seed 1 --variant all        # training scenes
    python -m qmn.data.synth --out runs/synth_val --num-images 100 --seed 1001 --variant all  # validation scenes
    python bench/query_ablation.py --train runs/synth --val runs/synth_val --steps 600 --out runs/ablation
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qmn import Predictor, load_model  # noqa: E402
from qmn.config import QUERY_MODES  # noqa: E402
from qmn.data.folder import load_dataset  # noqa: E402
from qmn.evaluate import evaluate_model  # noqa: E402
from qmn.io_utils import atomic_write_json, atomic_write_text  # noqa: E402


def train(mode: str, spec: Path, args: argparse.Namespace) -> Path:
    out = args.out / mode
    if (out / "last.safetensors").exists() and not args.retrain:
        return out / "last.safetensors"
    cmd = [sys.executable, "-m", "train", "--data", str(spec), "--query-mode", mode, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--image-size", str(args.image_size), "--lr", "5e-4",
           "--backbone-lr-mult", "1.0", "--grad-clip", "1.0", "--seed", "0", "--threads", "1", "--log-every", "50",
           "--save-every", "200", "--out", str(out)]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out / "last.safetensors"


def query_type_shares(predictor: Predictor, dataset, max_images: int) -> dict:
    """Which query type produced the panoptic segment that matches each ground-truth region (IoU > 0.5, same label)."""
    things = set(dataset.thing_classes or [])
    found: dict[str, Counter] = {"things": Counter(), "stuff": Counter()}
    for i in range(min(max_images, len(dataset))):
        sample = dataset[i]
        pred = predictor.predict(sample.image, dataset.vocabulary, "panoptic")
        for ann in sample.annotations:
            group = "things" if ann.text in things else "stuff"
            best, best_type = 0.5, "missed"
            for seg in pred.segments:
                if seg.label == ann.text:
                    iou = (seg.mask & ann.mask).sum() / max((seg.mask | ann.mask).sum(), 1)
                    if iou > best:
                        best, best_type = iou, seg.query_type
            found[group][best_type] += 1
    shares = {}
    for group, counts in found.items():
        hit = counts["learnable"] + counts["conditional"]
        shares[group] = {"regions": sum(counts.values()), "found": hit,
                         "by_learnable": counts["learnable"] / hit if hit else None,
                         "by_conditional": counts["conditional"] / hit if hit else None}
    return shares


def evaluate(checkpoint: Path, val: Path, max_images: int) -> dict:
    predictor = Predictor(load_model(checkpoint))
    panoptic = load_dataset(val / "panoptic", task="panoptic")
    things = list(panoptic.thing_classes)
    stuff = [c for c in panoptic.vocabulary if c not in things]
    pq = evaluate_model(predictor, panoptic, "panoptic", max_images=max_images, progress=False)["metrics"]
    ap = evaluate_model(predictor, load_dataset(val / "panoptic", task="instance"), "instance", max_images=max_images,
                        prompts=things, progress=False)["metrics"]
    sem = evaluate_model(predictor, load_dataset(val / "panoptic", task="semantic"), "semantic", max_images=max_images,
                         progress=False)
    per_class = sem["details"]["per_class_iou"]
    stuff_ious = [per_class[c] for c in stuff if per_class.get(c) is not None]
    ref = evaluate_model(predictor, load_dataset(val / "referring", task="referring"), "referring", max_images=max_images,
                         progress=False)["metrics"]
    return {"thing_mask_AP": ap["mask_AP"], "PQ": pq["PQ"], "PQ_things": pq["PQ_things"], "PQ_stuff": pq["PQ_stuff"],
            "stuff_mIoU": float(np.mean(stuff_ious)) if stuff_ious else None, "mIoU": sem["metrics"]["mIoU"],
            "referring_cIoU": ref["cIoU"], "query_types": query_type_shares(predictor, panoptic, max_images)}


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = ["| queries | thing mask AP | PQ | PQ things | PQ stuff | stuff mIoU | referring cIoU | things found by conditional | stuff found by learnable |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, r in results.items():
        q = r["query_types"]
        lines.append(f"| {mode} ({r['queries']}) | {pct(r['thing_mask_AP'])} | {pct(r['PQ'])} | {pct(r['PQ_things'])} | "
                     f"{pct(r['PQ_stuff'])} | {pct(r['stuff_mIoU'])} | {pct(r['referring_cIoU'])} | "
                     f"{pct(q['things']['by_conditional'])}% of {q['things']['found']} | "
                     f"{pct(q['stuff']['by_learnable'])}% of {q['stuff']['found']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=Path, required=True, help="folder with panoptic/ and referring/ synthetic variants")
    p.add_argument("--val", type=Path, required=True, help="validation folder of another seed, same layout")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--image-size", type=int, default=192)
    p.add_argument("--max-images", type=int, default=60, help="validation images per metric")
    p.add_argument("--modes", nargs="+", default=list(QUERY_MODES), choices=QUERY_MODES)
    p.add_argument("--retrain", action="store_true", help="train again even when a run folder has a checkpoint")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    spec = args.out / "spec.json"
    atomic_write_json(spec, {"datasets": [
        {"name": "things+stuff", "path": str((args.train / "panoptic").resolve()), "task": "panoptic", "ratio": 2},
        {"name": "referring", "path": str((args.train / "referring").resolve()), "task": "referring", "ratio": 1}]}, indent=2)
    results = {}
    for mode in args.modes:
        ckpt = train(mode, spec, args)
        r = evaluate(ckpt, args.val, args.max_images)
        cfg = load_model(ckpt).cfg
        r["queries"] = f"{cfg.num_learnable} learnable + {cfg.num_conditional} conditional"
        results[mode] = r
        print(json.dumps({"mode": mode, **r}), flush=True)
    atomic_write_json(args.out / "results.json", {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2)
    atomic_write_text(args.out / "table.md", markdown(results, args) + "\n")
    print(markdown(results, args))


if __name__ == "__main__":
    main()
