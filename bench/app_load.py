"""Load test: N simultaneous gradio_client sessions x M /segment calls each, on distinct images.

Checks for errors and for state crossing (a session must only ever see its own image back), and
records the server's peak RSS. Prints JSON. Usage: python bench/app_load.py [--sessions 8] [--requests 10]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.app_server import serve_app  # noqa: E402
from bench.predict_memory import rss_mb  # noqa: E402


def session_image(path: Path, index: int, size: int) -> Path:
    img = np.full((size, size, 3), 10 + 20 * index, np.uint8)  # distinct per session -> distinct stored name
    cv2.rectangle(img, (size // 4, size // 4), (3 * size // 4, 3 * size // 4), (250, 200 - 10 * index, 30), -1)
    cv2.imwrite(str(path), img)
    return path


def run_session(url: str, image: Path, requests: int, errors: list, crossings: list) -> list[float]:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    handle, own, times = handle_file(str(image)), None, []
    for _ in range(requests):
        t0 = time.perf_counter()
        try:
            summary = client.predict(handle, "block, background", "instance", 0.3, "", "", api_name="/segment")[-1]
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors.append(f"{type(e).__name__}: {e}")
            continue
        times.append(time.perf_counter() - t0)
        own = own or summary["image"]
        if summary["image"] != own:
            crossings.append((own, summary["image"]))
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--requests", type=int, default=10, help="segment calls per session")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--model-concurrency", type=int, default=1)
    args = p.parse_args(argv)
    errors: list[str] = []
    crossings: list = []
    stop = threading.Event()

    with tempfile.TemporaryDirectory() as tmp, \
            serve_app(Path(tmp) / "ws", args.checkpoint, args.device, args.model_concurrency) as (url, server):
        rss_start = rss_mb(server.pid) or 0.0  # None where /proc is missing
        peak = [rss_start]

        def sample_rss() -> None:
            while not stop.wait(0.2):
                peak[0] = max(peak[0], rss_mb(server.pid) or 0.0)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        images = [session_image(Path(tmp) / f"s{i}.png", i, args.size) for i in range(args.sessions)]
        t0 = time.perf_counter()
        try:
            with ThreadPoolExecutor(args.sessions) as pool:
                futures = [pool.submit(run_session, url, im, args.requests, errors, crossings) for im in images]
                times = [t for f in futures for t in f.result()]
        finally:
            wall = time.perf_counter() - t0
            stop.set()
    print(json.dumps({
        "bench": "app_load", "sessions": args.sessions, "requests_per_session": args.requests,
        "ok": len(times), "errors": len(errors), "error_samples": errors[:3], "state_crossings": len(crossings),
        "wall_s": round(wall, 2), "throughput_rps": round(len(times) / wall, 3) if wall else None,
        "median_s": round(float(np.median(times)), 3) if times else None,
        "p90_s": round(float(np.percentile(times, 90)), 3) if times else None,
        "rss_start_mb": round(rss_start, 1), "rss_peak_mb": round(peak[0], 1),
        "model": args.checkpoint or "launch.py default", "device": args.device,
    }))
    return 0 if not errors and not crossings else 1


if __name__ == "__main__":
    sys.exit(main())
