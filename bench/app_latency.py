"""Segment latency through the app's API: a 512 px image sent with gradio_client, as a user's browser would.

Prints JSON: median and p90 seconds per /segment call (upload + predict + overlay + download).
Usage: python bench/app_latency.py [--checkpoint C] [--repeats 10] [--device auto]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.app_server import serve_app  # noqa: E402


def test_image(path: Path, size: int = 512) -> Path:
    rng = np.random.default_rng(0)
    img = np.full((size, size, 3), 40, np.uint8)
    for _ in range(6):
        x, y, r = rng.integers(40, size - 40, 2).tolist() + [int(rng.integers(15, 60))]
        cv2.circle(img, (x, y), r, tuple(int(c) for c in rng.integers(60, 255, 3)), -1)
    cv2.imwrite(str(path), img)
    return path


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: the bundled one, or untrained tiny)")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=10, help="timed calls after one warm-up (default 10)")
    p.add_argument("--prompts", default="circle, square, background")
    args = p.parse_args(argv)
    from gradio_client import Client, handle_file
    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        with serve_app(Path(tmp) / "ws", args.checkpoint, args.device) as (url, _):
            image = handle_file(str(test_image(Path(tmp) / "bench.png")))
            client = Client(url, verbose=False)
            call = lambda: client.predict(image, args.prompts, "panoptic", 0.3, "", "", api_name="/segment")  # noqa: E731
            call()  # warm-up: first prompt embedding, lazy imports
            times = []
            for _ in tqdm(range(args.repeats), desc="segment"):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
    print(json.dumps({
        "bench": "app_latency", "image_px": 512, "repeats": args.repeats, "device": args.device,
        "model": args.checkpoint or "launch.py default",
        "median_s": round(statistics.median(times), 4), "p90_s": round(percentile(times, 90), 4),
        "min_s": round(min(times), 4),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
