"""Train the bundled matting refinement network on synthetic furry composites (CPU-friendly, time-boxed).

    python -m train.matting --out assets/matting --minutes 35 --seed 0

Each step renders fresh soft-edged objects (qmn.data.furry), simulates the mask a segmenter would give
(GT alpha thresholded at a random level, jittered by a pixel or two), builds a trimap from it with a random
band width (or, some of the time, a benchmark-style trimap from the GT), and fits MattingNet with AdamW on
L1 + unknown L1 + Laplacian loss. Writes `<out>/matting.safetensors` (fp16) + `<out>/matting.json`
(config + training record) atomically every few minutes and at the end; logs JSONL to --log.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from qmn.data.furry import render_furry
from qmn.io_utils import atomic_path
from qmn.matting.checkpoint import save_matting_model
from qmn.matting.losses import matting_losses
from qmn.matting.metrics import sad
from qmn.matting.network import MattingConfig, MattingNet
from qmn.matting.trimap import make_trimap, trimap_onehot

VALIDATION_SEED_OFFSET = 1_000_003  # held-out scenes: never drawn by the training stream of any seed < this
VALIDATION_COUNT = 24
VALIDATION_SIZE = 192


def simulated_mask(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """A segmenter-like hard mask (H, W) bool: alpha thresholded at a random level, then eroded/dilated 0-2 px."""
    mask = (alpha > rng.uniform(0.15, 0.85)).astype(np.uint8)
    shift = int(rng.integers(-2, 3))
    if shift:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(shift) + 1,) * 2)
        mask = cv2.dilate(mask, kernel) if shift > 0 else cv2.erode(mask, kernel)
    return mask > 0


def gt_style_trimap(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """Benchmark-style trimap (H, W) uint8: the band of fractional GT alpha, dilated by 2-10 px, is unknown."""
    partial = ((alpha > 0.005) & (alpha < 0.995)).astype(np.uint8)
    radius = int(rng.integers(2, 11))
    unknown = cv2.dilate(partial, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)) > 0
    trimap = np.where(alpha >= 0.5, 255, 0).astype(np.uint8)
    trimap[unknown] = 128
    return trimap


def training_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 (S,S,3), alpha float32 (S,S), trimap uint8 (S,S)) cropped around the object's boundary."""
    render_size = int(rng.integers(size, int(size * 1.75) + 1))
    image, alpha, _, _ = render_furry(rng, render_size)
    ys, xs = np.nonzero((alpha > 0.01) & (alpha < 0.99))
    pick = int(rng.integers(len(ys))) if len(ys) else 0
    cy, cx = (ys[pick], xs[pick]) if len(ys) else (render_size // 2, render_size // 2)
    y0 = int(np.clip(cy - rng.integers(size // 4, 3 * size // 4 + 1), 0, render_size - size))
    x0 = int(np.clip(cx - rng.integers(size // 4, 3 * size // 4 + 1), 0, render_size - size))
    image, alpha = image[y0:y0 + size, x0:x0 + size], alpha[y0:y0 + size, x0:x0 + size]
    if rng.random() < 0.7:
        mask = simulated_mask(rng, alpha)
        width = max(3, int(round(rng.uniform(0.02, 0.10) * math.sqrt(max(1, int(mask.sum()))))))
        trimap = make_trimap(mask, width)
    else:
        trimap = gt_style_trimap(rng, alpha)
    if rng.random() < 0.5:
        image, alpha, trimap = image[:, ::-1], alpha[:, ::-1], trimap[:, ::-1]
    if rng.random() < 0.5:
        image, alpha, trimap = image[::-1], alpha[::-1], trimap[::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(alpha), np.ascontiguousarray(trimap)


def to_batch(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    """Stack pairs into image (B,3,S,S) [0,1], trimap one-hot (B,3,S,S), alpha (B,1,S,S)."""
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 255.0
    alphas = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
    onehots = torch.from_numpy(np.stack([trimap_onehot(p[2]) for p in pairs]))
    return images, onehots, alphas


def validation_set(seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Held-out scenes with the default trimap of the alpha > 0.5 mask (what `refine` sees from a segmenter)."""
    rng = np.random.default_rng(seed + VALIDATION_SEED_OFFSET)
    out = []
    for _ in range(VALIDATION_COUNT):
        image, alpha, _, _ = render_furry(rng, VALIDATION_SIZE)
        out.append((image, alpha, make_trimap(alpha > 0.5)))
    return out


@torch.no_grad()
def validate(model: MattingNet, pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Mean whole-image SAD (thousands) of the network and of the hard mask on the held-out scenes."""
    model.eval()
    images, onehots, alphas = to_batch(pairs)
    pred = model(images, onehots)[:, 0].numpy()
    model.train()
    gts = alphas[:, 0].numpy()
    return {"val_sad_network": float(np.mean([sad(p, g) for p, g in zip(pred, gts)])),
            "val_sad_hard_mask": float(np.mean([sad((g > 0.5).astype(np.float32), g) for g in gts]))}


def learning_rate(base: float, step: int, progress: float, warmup: int = 100) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 5% over the time/step budget (`progress` in [0,1])."""
    return base * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.matting", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="assets/matting", help="folder for matting.safetensors + matting.json")
    p.add_argument("--minutes", type=float, default=35.0, help="wall-clock training budget (default 35)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0 = only the time budget)")
    p.add_argument("--seed", type=int, default=0, help="seeds torch and the synthetic data stream")
    p.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--size", type=int, default=128, help="training crop side in px (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    p.add_argument("--save-every", type=float, default=3.0, help="minutes between checkpoint writes (default 3)")
    p.add_argument("--log", default="runs/matting/train.jsonl", help="JSONL log, one line per logged step")
    args = p.parse_args(argv)
    if args.minutes <= 0 and args.steps <= 0:
        p.error("give a positive --minutes or --steps budget")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    model = MattingNet(MattingConfig())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    val_pairs = validation_set(args.seed)
    out_path = Path(args.out) / "matting.safetensors"
    log_path = Path(args.log)
    log_lines: list[str] = []
    budget_s = args.minutes * 60.0 if args.minutes > 0 else math.inf
    start = last_save = time.time()
    record = {"command": "python -m train.matting " + " ".join(sys.argv[1:] if argv is None else argv),
              "seed": args.seed, "batch": args.batch, "crop": args.size, "lr": args.lr,
              "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
                         f"torch {torch.__version__}, {args.threads} thread(s)".replace("  ", " "),
              "params": sum(p.numel() for p in model.parameters())}

    def checkpoint(step: int, final: bool) -> dict:
        metrics = validate(model, val_pairs)
        record.update(steps=step, wall_seconds=round(time.time() - start, 1), final=final, **metrics)
        save_matting_model(model, out_path, record)
        return metrics

    step = 0
    progress_bar = tqdm(total=args.steps or None, desc="matting", unit="step", dynamic_ncols=True)
    while True:
        elapsed = time.time() - start
        progress = max(elapsed / budget_s, step / args.steps if args.steps else 0.0)
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args.lr, step, progress)
        images, onehots, alphas = to_batch([training_pair(rng, args.size) for _ in range(args.batch)])
        losses = matting_losses(model(images, onehots), alphas, onehots[:, 1:2])
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        step += 1
        progress_bar.update(1)
        progress_bar.set_postfix(loss=f"{losses['loss'].item():.4f}")
        entry = {"step": step, "time": round(elapsed, 1), "lr": optimizer.param_groups[0]["lr"],
                 **{k: round(v.item(), 5) for k, v in losses.items()}}
        if time.time() - last_save >= args.save_every * 60.0:
            entry.update(checkpoint(step, final=False))
            last_save = time.time()
        if step % 10 == 0 or "val_sad_network" in entry:
            log_lines.append(json.dumps(entry))
            with atomic_path(log_path) as tmp:
                tmp.write_text("\n".join(log_lines) + "\n")
    progress_bar.close()
    final = checkpoint(step, final=True)
    print(json.dumps({"steps": step, "wall_seconds": record["wall_seconds"], **final}))
    return record


if __name__ == "__main__":
    main()
