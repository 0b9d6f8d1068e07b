"""Predict latency (after warm-up) and peak RSS of a QueryMeldNet for each task: prints one JSON object per task.

    python bench/latency.py [--checkpoint assets/qmn_tiny.safetensors] [--size 512] [--repeats 10] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qmn import Predictor, QueryMeldNet, get_preset, load_model  # noqa: E402
from qmn.data.synth import generate_sample  # noqa: E402

PROMPTS = {"referring": ["the red circle", "the striped square", "the small blue star", "the sky", "the leftmost triangle"]}
CLASSES = "circle, square, triangle, sky, grass"
TASKS = ("panoptic", "instance", "semantic", "referring", "foreground", "detection")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="assets/qmn_tiny.safetensors",
                   help="checkpoint to time (an untrained tiny model when the file is absent)")
    p.add_argument("--size", type=int, default=512, help="square test image side (a synthetic scene)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if Path(args.checkpoint).is_file():
        model, source = load_model(args.checkpoint, args.device), args.checkpoint
    else:
        model, source = QueryMeldNet(get_preset("tiny")).to(args.device).eval(), "untrained tiny"
    predictor = Predictor(model)
    image = generate_sample(np.random.default_rng(0), args.size, "panoptic").image
    for task in TASKS:
        prompts = PROMPTS.get(task, CLASSES)
        for _ in range(2):  # warm-up: allocator, prompt-embedding cache
            predictor.predict(image, prompts, task)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            pred = predictor.predict(image, prompts, task)
            times.append(time.perf_counter() - t)
        times.sort()
        print(json.dumps({"task": task, "median_s": round(statistics.median(times), 4),
                          "p90_s": round(times[min(len(times) - 1, int(0.9 * len(times)))], 4),
                          "peak_rss_mb": round(peak_rss_mb(), 1), "segments": len(pred.segments),
                          "image": f"{args.size}x{args.size}", "prompts": 5, "threads": args.threads,
                          "device": args.device, "model": source}), flush=True)


if __name__ == "__main__":
    main()
