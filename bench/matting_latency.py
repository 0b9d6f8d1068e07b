"""Refinement latency on CPU: seconds for `refine` of a 512 px furry image, network vs classical; prints JSON.

    python -m bench.matting_latency [--size 512] [--repeats 7] [--threads 2]

One warm-up call per method (numba / torch start-up) is not counted; reports median and p90 over --repeats
distinct images, the trimap band from the default width, and the machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch
from tqdm import tqdm

from qmn.data.furry import render_furry
from qmn.matting.refine import bundled_model, refine


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.matting_latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="image side in px (default 512)")
    p.add_argument("--repeats", type=int, default=7, help="timed images per method (default 7)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--seed", type=int, default=7, help="seed of the test images (default 7)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    cases = [render_furry(rng, args.size) for _ in range(args.repeats + 1)]
    methods = ["classical"] + (["network"] if bundled_model() is not None else [])
    result = {"size": args.size, "repeats": args.repeats, "threads": args.threads,
              "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}"}
    for method in methods:
        seconds = []
        for i, (image, alpha, _, _) in enumerate(tqdm(cases, desc=method)):
            start = time.perf_counter()
            refine(image, alpha > 0.5, method=method)
            if i > 0:  # the first call is the warm-up
                seconds.append(time.perf_counter() - start)
        result[method] = {"median_s": round(float(np.median(seconds)), 4),
                          "p90_s": round(float(np.percentile(seconds, 90)), 4)}
    if "network" not in methods:
        result["network"] = "skipped: no bundled checkpoint at assets/matting/matting.safetensors"
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
