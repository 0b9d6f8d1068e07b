"""Matting quality: hard mask vs classical (pymatting closed-form) vs the bundled network; prints JSON.

    OMP_NUM_THREADS=2 python -m bench.matting_eval [--write-docs]

Sets:
  synthetic      held-out furry composites (qmn.data.furry, seed --seed), mask = GT alpha > 0.5, the mask and
                 refine protocols below; errors over the whole image (a method can only change the band, so the rest
                 counts the same for all).
  alphamatting   ../shared/data/alphamatting (20 real photos), two trimap protocols:
                   given   the benchmark's hand-drawn trimaps;
                   mask    trimap made by `make_trimap` from the thresholded GT alpha (> 0.5), as a segmenter's mask
                           would give; default band width (or --trimap-width); the solver unguarded.
                   refine  the app's path: `qmn.matting.refine(image, mask)` from that mask, i.e. the band where the
                           mask is uncertain (`adaptive_trimap`) and the guard (`guard_alpha`); per image SAD vs the
                           hard mask's, the mean ratio and the images made more than 5% worse are reported.
                 Errors over the given trimap's unknown band (the benchmark convention) for both protocols.
SAD, Grad and Conn are in thousands (/1000); MSE is per pixel. With --write-docs the tables replace the block
between the markers in docs/matting.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from qmn.data.furry import render_furry
from qmn.io_utils import atomic_write_text
from qmn.matting.metrics import matting_errors
from qmn.matting.metrics import sad
from qmn.matting.refine import alpha_from_trimap, bundled_model, refine
from qmn.matting.trimap import make_trimap, trimap_regions

REPO_ROOT = Path(__file__).resolve().parents[1]
ALPHAMATTING = REPO_ROOT.parent / "shared" / "data" / "alphamatting"
DOCS = REPO_ROOT / "docs" / "matting.md"
BEGIN, END = "<!-- matting_eval:begin -->", "<!-- matting_eval:end -->"
METRICS = ("sad", "mse", "grad", "conn")


def synthetic_cases(seed: int, count: int, size: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        image, alpha, _, label = render_furry(rng, size)
        cases.append({"name": f"synthetic-{i}-{label}", "image": image, "alpha": alpha, "mask": alpha > 0.5,
                      "region": None})
    return cases


def alphamatting_cases(root: Path) -> list[dict]:
    cases = []
    for input_path in sorted((root / "input").glob("*.png")):
        image = cv2.cvtColor(cv2.imread(str(input_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        alpha = cv2.imread(str(root / "alpha" / input_path.name), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
        trimap = np.asarray(cv2.imread(str(root / "trimap" / input_path.name), cv2.IMREAD_GRAYSCALE))
        cases.append({"name": input_path.stem, "image": image, "alpha": alpha, "mask": alpha > 0.5,
                      "given_trimap": trimap, "region": trimap_regions(trimap)[1]})
    return cases


def evaluate(cases: list[dict], methods: list[str], protocol: str, trimap_width: int | None, desc: str) -> dict:
    """Mean errors and mean seconds per method: {method: {sad, mse, grad, conn, seconds}}."""
    sums = {m: dict.fromkeys(METRICS + ("seconds",), 0.0) for m in methods}
    per_image: dict[str, dict[str, float]] = {m: {} for m in methods}
    for case in tqdm(cases, desc=desc, file=sys.stderr):
        trimap = None
        if protocol != "refine":
            trimap = case["given_trimap"] if protocol == "given" else make_trimap(case["mask"], trimap_width)
        for method in methods:
            start = time.perf_counter()
            if method == "hard_mask":
                alpha = case["mask"].astype(np.float32)
            elif protocol == "refine":
                alpha = refine(case["image"], case["mask"], trimap_width, method=method)
            else:
                alpha = alpha_from_trimap(case["image"], trimap, method=method)
            per_image[method][case["name"]] = round(sad(alpha, case["alpha"], case["region"]), 4)
            sums[method]["seconds"] += time.perf_counter() - start
            for name, value in matting_errors(alpha, case["alpha"], case["region"]).items():
                sums[method][name] += value
    out = {m: {k: round(v / len(cases), 5) for k, v in s.items()} for m, s in sums.items()}
    if protocol == "refine" and "hard_mask" in methods:
        hard = per_image["hard_mask"]
        for m in methods:
            ratios = {n: v / max(hard[n], 1e-9) for n, v in per_image[m].items()}
            out[m]["sad_vs_hard_mask"] = round(out[m]["sad"] / max(out["hard_mask"]["sad"], 1e-9), 4)
            out[m]["worse_than_hard_by_5pct"] = {n: round(r, 3) for n, r in ratios.items() if r > 1.05}
            out[m]["sad_per_image"] = per_image[m]
    return out


def markdown(results: dict, command: str) -> str:
    lines = [f"Measured by `{command}`.", ""]
    for set_name, by_method in results["sets"].items():
        lines += [f"**{set_name}** ({results['counts'][set_name]} images)", "",
                  "| method | SAD | MSE | Grad | Conn | s / image |", "|---|---|---|---|---|---|"]
        for method, r in by_method.items():
            lines.append(f"| {method} | {r['sad']:.3f} | {r['mse']:.5f} | {r['grad']:.3f} | {r['conn']:.3f} | "
                         f"{r['seconds']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def write_docs(block: str) -> None:
    text = DOCS.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{DOCS}: missing the markers {BEGIN} / {END}")
    head, rest = text.split(BEGIN, 1)
    atomic_write_text(DOCS, head + BEGIN + "\n" + block + "\n" + END + rest.split(END, 1)[1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.matting_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=20250, help="seed of the held-out synthetic set (default 20250)")
    p.add_argument("--count", type=int, default=24, help="synthetic images (default 24; 0 skips the set)")
    p.add_argument("--size", type=int, default=384, help="synthetic image side in px (default 384)")
    p.add_argument("--trimap-width", type=int, default=None, help="band half-width px (default: relative to size)")
    p.add_argument("--protocols", nargs="+", default=["given", "mask", "refine"], choices=["given", "mask", "refine"],
                   help="alphamatting trimap protocols (all)")
    p.add_argument("--write-docs", action="store_true", help=f"replace the results block in {DOCS.name}")
    args = p.parse_args(argv)
    methods = ["hard_mask", "classical"] + (["network"] if bundled_model() is not None else [])
    results = {"sets": {}, "counts": {}, "network_available": "network" in methods}
    if args.count > 0:
        cases = synthetic_cases(args.seed, args.count, args.size)
        for protocol in [p for p in args.protocols if p != "given"]:  # no hand-drawn trimaps there
            name = f"synthetic furry, {protocol} trimap"
            results["sets"][name] = evaluate(cases, methods, protocol, args.trimap_width, name)
            results["counts"][name] = len(cases)
    if ALPHAMATTING.is_dir():
        cases = alphamatting_cases(ALPHAMATTING)
        for protocol in args.protocols:
            name = f"alphamatting, {protocol} trimap"
            results["sets"][name] = evaluate(cases, methods, protocol, args.trimap_width, name)
            results["counts"][name] = len(cases)
    else:
        results["alphamatting"] = f"skipped: {ALPHAMATTING} not found"
    print(json.dumps(results, indent=2))
    if args.write_docs:
        write_docs(markdown(results, "OMP_NUM_THREADS=2 python -m bench.matting_eval " + " ".join(argv or sys.argv[1:])))
    return results


if __name__ == "__main__":
    main()
