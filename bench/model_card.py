"""Evaluate a checkpoint on the synthetic validation scenes (another seed) and on the held-out parts of its training
spec, print JSON, and (with --write) store the numbers in the checkpoint's JSON record, where the app's model card
and README read them.

    python -m qmn.data.synth --out runs/synth_val --num-images 100 --seed 1001 --variant all
    python bench/model_card.py --checkpoint assets/qmn_tiny.safetensors --val runs/synth_val \
        --spec assets/default_data_spec.json --write
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
from train.data import resolve_data  # noqa: E402

SYNTHETIC = (("panoptic", "panoptic"), ("panoptic", "semantic"), ("panoptic", "instance"), ("referring", "referring"),
             ("foreground", "foreground"), ("detection", "detection"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="assets/qmn_tiny.safetensors")
    p.add_argument("--val", type=Path, default=Path("runs/synth_val"), help="synthetic validation folder (variant all)")
    p.add_argument("--spec", default="assets/default_data_spec.json", help="training spec: its held-out parts are scored")
    p.add_argument("--max-images", type=int, default=100)
    p.add_argument("--write", action="store_true", help="store the metrics in the checkpoint's JSON record")
    args = p.parse_args()
    predictor = Predictor(load_model(args.checkpoint))
    card: dict = {"synthetic_validation": {}, "real_heldout": {}}
    for folder, task in SYNTHETIC:
        if not (args.val / folder).is_dir():
            continue
        r = evaluate_model(predictor, load_dataset(args.val / folder, task=task), task, max_images=args.max_images, progress=False)
        card["synthetic_validation"][task] = {"images": r["num_images"], **r["metrics"]}
        print(json.dumps({"set": f"synthetic/{task}", **card["synthetic_validation"][task]}), flush=True)
    data = resolve_data(args.spec)
    for entry, part in zip(data.spec.datasets, data.heldout):
        if len(part) == 0:
            continue
        r = evaluate_model(predictor, part, part.task, max_images=args.max_images, progress=False)
        card["real_heldout"][entry.name] = {"task": part.task, "images": r["num_images"], **r["metrics"]}
        print(json.dumps({"set": entry.name, **card["real_heldout"][entry.name]}), flush=True)
    card["command"] = "python bench/model_card.py " + " ".join(sys.argv[1:])
    if args.write:
        meta = read_meta(args.checkpoint)
        meta.setdefault("record", {})["final_metrics"] = card
        atomic_write_json(sidecar_path(args.checkpoint), meta, indent=2)


if __name__ == "__main__":
    main()
