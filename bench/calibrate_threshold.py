"""Calibrate a checkpoint's default score threshold: the one that maximises PQ on a *tuning* set (a synthetic seed
used neither for training nor for the reported validation), written into the checkpoint's JSON config.

    python -m qmn.data.synth --out runs/synth_tune --num-images 40 --seed 2002 --variant panoptic
    python bench/calibrate_threshold.py --checkpoint assets/qmn_tiny.safetensors --data runs/synth_tune --write
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qmn import Predictor, load_model  # noqa: E402
from qmn.checkpoint import read_meta, sidecar_path  # noqa: E402
from qmn.data.folder import load_dataset  # noqa: E402
from qmn.evaluate import evaluate_model  # noqa: E402
from qmn.io_utils import atomic_write_json  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="assets/qmn_tiny.safetensors")
    p.add_argument("--data", type=Path, required=True, help="a panoptic labeled folder (the tuning set)")
    p.add_argument("--grid", type=float, nargs="+", default=[0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5])
    p.add_argument("--max-images", type=int, default=40)
    p.add_argument("--write", action="store_true", help="store the best threshold as the checkpoint's score_threshold")
    args = p.parse_args()
    predictor = Predictor(load_model(args.checkpoint))
    dataset = load_dataset(args.data, task="panoptic")
    scores = {}
    for t in args.grid:
        scores[t] = evaluate_model(predictor, dataset, "panoptic", max_images=args.max_images, threshold=t, progress=False)["metrics"]["PQ"]
        print(json.dumps({"threshold": t, "PQ": scores[t]}), flush=True)
    best = max(scores, key=lambda t: (scores[t] or 0.0))
    print(json.dumps({"best_threshold": best, "PQ": scores[best], "tuning_set": str(args.data)}))
    if args.write:
        meta = read_meta(args.checkpoint)
        meta["config"]["score_threshold"] = best
        meta.setdefault("record", {})["threshold_calibration"] = {
            "tuning_set": str(args.data), "images": min(args.max_images, len(dataset)), "pq_by_threshold": scores,
            "command": "python bench/calibrate_threshold.py " + " ".join(sys.argv[1:])}
        atomic_write_json(sidecar_path(args.checkpoint), meta, indent=2)


if __name__ == "__main__":
    main()
