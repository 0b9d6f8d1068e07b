"""Bounded memory of `python -m qmn.predict` over a large folder: RSS of the predict process vs images done.

Generates N synthetic images, runs qmn.predict on them in a subprocess, samples that process's resident
memory (VmRSS) and how many per-image records exist every --interval seconds, and prints JSON: RSS when
25/50/75/100% of the images are done, the peak while labeling and while merging, and the growth per 100
images over the last three quarters (near 0 = bounded). Also whether the tqdm progress bar was shown.

Usage: python bench/predict_memory.py [--images 1000] [--size 256] [--checkpoint C] [--model-size 256]
Without --checkpoint it uses assets/qmn_tiny.safetensors, or saves an untrained `tiny` model (weights do not
change the memory profile) when that file does not exist yet.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "assets" / "qmn_tiny.safetensors"


def generate_images(folder: Path, count: int, size: int, seed: int = 0) -> None:
    """`count` PNGs of random filled shapes on a noisy background, (size, size) each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = rng.integers(0, 60, (size, size, 3), np.uint8)
        for _ in range(4):
            x, y = rng.integers(0, size, 2).tolist()
            colour = tuple(int(c) for c in rng.integers(80, 255, 3))
            if rng.random() < 0.5:
                cv2.circle(image, (x, y), int(rng.integers(size // 16, size // 4)), colour, -1)
            else:
                cv2.rectangle(image, (x, y), (x + int(rng.integers(8, size // 3)), y + int(rng.integers(8, size // 3))), colour, -1)
        cv2.imwrite(str(folder / f"img_{index:05d}.png"), image)


def untrained_checkpoint(path: Path, image_size: int | None) -> Path:
    """Save an untrained `tiny` model (optionally at another input size) as a .safetensors + .json pair."""
    sys.path.insert(0, str(REPO))
    from qmn import QueryMeldNet, get_preset

    overrides = {"image_size": image_size} if image_size else {}
    QueryMeldNet(get_preset("tiny", **overrides)).save(path)
    return path


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_predict(images: Path, out: Path, checkpoint: Path, threshold: float, interval: float,
                log: Path) -> tuple[int, list[tuple]]:
    """Run qmn.predict; returns (exit code, [(seconds, rss MB, records done)])."""
    command = [sys.executable, "-m", "qmn.predict", "--images", str(images), "--out", str(out), "--prompts",
               "circle, box", "--task", "instance", "--checkpoint", str(checkpoint), "--device", "cpu",
               "--threshold", str(threshold)]
    samples: list[tuple] = []
    records = out / "per_image"
    started = time.perf_counter()
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
        while process.poll() is None:
            memory = rss_mb(process.pid)
            done = sum(1 for _ in os.scandir(records)) if records.is_dir() else 0
            if memory is not None:
                samples.append((time.perf_counter() - started, memory, done))
            time.sleep(interval)
    return process.returncode, samples


def summarise(samples: list[tuple], count: int) -> dict:
    """RSS at quartiles of progress, peaks, and the growth slope over the last three quarters."""
    def rss_at(fraction: float) -> float | None:
        reached = [rss for _, rss, done in samples if done >= fraction * count]
        return round(reached[0], 1) if reached else None

    labeling = [(rss, done) for _, rss, done in samples if 0 < done < count]
    merging = [rss for _, rss, done in samples if done >= count]
    tail = [(done, rss) for rss, done in labeling if done >= count / 4]
    slope = None
    if len(tail) >= 3 and tail[-1][0] > tail[0][0]:
        slope = round(float(np.polyfit([d for d, _ in tail], [r for _, r in tail], 1)[0]) * 100, 2)
    return {
        "rss_mb_first_image": rss_at(1 / count),
        "rss_mb_at_25pct": rss_at(0.25), "rss_mb_at_50pct": rss_at(0.5),
        "rss_mb_at_75pct": rss_at(0.75), "rss_mb_at_100pct": rss_at(1.0),
        "rss_peak_mb_labeling": round(max((r for r, _ in labeling), default=0), 1),
        "rss_peak_mb_merging": round(max(merging, default=0), 1),
        "rss_growth_mb_per_100_images": slope,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="number of synthetic images")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model; default: the bundled one or untrained")
    parser.add_argument("--model-size", type=int, default=None, help="input size of the untrained model (default: tiny's)")
    parser.add_argument("--threshold", type=float, default=0.3,
                        help="segment score threshold (an untrained model scores below ~0.04: use 0.03 with it)")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between RSS samples")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.keep or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = args.checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None)
        model = str(checkpoint) if checkpoint else f"untrained tiny (image_size {args.model_size or 'default'})"
        checkpoint = checkpoint or untrained_checkpoint(work / "untrained.safetensors", args.model_size)
        generate_images(work / "images", args.images, args.size)
        started = time.perf_counter()
        code, samples = run_predict(work / "images", work / "out", checkpoint, args.threshold, args.interval, work / "predict.log")
        wall = time.perf_counter() - started
        log = (work / "predict.log").read_text(errors="replace")
        summary_path = work / "out" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        result = {
            "bench": "predict_memory", "images": args.images, "image_size": args.size, "model": model,
            "threshold": args.threshold, "exit_code": code, "wall_s": round(wall, 1),
            "images_per_s": round(args.images / wall, 2) if wall else None,
            "samples": len(samples), **summarise(samples, args.images),
            "progress_bar_seen": "img/s" in log or "s/img" in log,
            "segments_written": summary.get("num_segments"), "merged_files": summary.get("files"),
            "log_tail": log.strip().splitlines()[-1][-200:] if log.strip() else "",
        }
    print(json.dumps(result))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
