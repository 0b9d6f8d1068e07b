"""Training throughput: images/s and peak memory of forward + backward + AdamW on synthetic batches; prints one JSON
object per configuration (one per line).

    python -m bench.train_throughput                          # tiny on cpu; base on cuda when there is a GPU
    python -m bench.train_throughput --configs tiny:cpu --image-size 128 --batch-size 2 --steps 5 --threads 1

Each step is the trainer's step (train/trainer.py): bf16 autocast on CUDA, loss, backward, grad clip, AdamW with the
trainer's param groups. Batches are synthetic panoptic scenes (qmn.data.synth) collated as in training, made before
timing; the first --warmup steps are not timed. Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the
process's peak RSS (ru_maxrss), which includes everything the process loaded (torch, the text encoder).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch
from tqdm import tqdm

from qmn.batching import Batch, collate
from qmn.config import get_preset
from qmn.data.synth import generate_sample
from qmn.model import QueryMeldNet
from train.optim import build_optimizer

DISTINCT_BATCHES = 4  # synthetic batches made up front and cycled, so data making is never timed


def synthetic_batches(cfg, batch_size: int, seed: int) -> list[Batch]:
    rng = np.random.default_rng(seed)
    return [collate([generate_sample(rng, cfg.image_size, "panoptic") for _ in range(batch_size)], cfg, rng)
            for _ in range(DISTINCT_BATCHES)]


def measure(preset: str, device: str = "cpu", image_size: int | None = None, batch_size: int = 4, steps: int = 10,
            warmup: int = 2, amp: bool = True, channels_last: bool = False, seed: int = 0) -> dict:
    """Time `steps` training steps of `preset` on `device` after `warmup` untimed ones -> a JSON-ready dict."""
    overrides = {"image_size": image_size} if image_size else {}
    cfg = get_preset(preset, **overrides)
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = QueryMeldNet(cfg).to(dev).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, 2e-4, 0.05)
    batches = [b.to(dev) for b in synthetic_batches(cfg, batch_size, seed)]
    for b in batches:
        b.images = b.images.contiguous(memory_format=memory_format)
    use_amp = amp and dev.type == "cuda"
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    losses = []
    started = 0.0
    for i in tqdm(range(warmup + steps), desc=f"{preset} {device}", leave=False):
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            started = time.perf_counter()
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = model.compute_loss(batches[i % DISTINCT_BATCHES])["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        losses.append(loss.detach())
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - started
    final = [float(v) for v in losses]  # one host sync, after timing
    result = {"preset": preset, "device": str(dev), "image_size": cfg.image_size, "batch_size": batch_size,
              "steps": steps, "amp_bf16": use_amp, "channels_last": channels_last,
              "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
              "trainable_params_m": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2),
              "img_per_s": round(steps * batch_size / seconds, 3), "s_per_step": round(seconds / steps, 4),
              "loss_finite": bool(np.isfinite(final).all()), "last_loss": round(final[-1], 4)}
    if dev.type == "cuda":
        result["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        result["gpu"] = torch.cuda.get_device_name(dev)
    else:
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
        result["threads"] = torch.get_num_threads()
        result["cpu"] = f"{platform.machine()} {platform.processor()}".strip()
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m bench.train_throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tiny:cpu,base:cuda",
                   help="comma-separated preset:device pairs (default tiny:cpu,base:cuda; cuda ones skip without a GPU)")
    p.add_argument("--image-size", type=int, help="override the presets' image size")
    p.add_argument("--batch-size", type=int, default=4, help="images per step (default 4)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--channels-last", action="store_true", help="backbone weights and images in channels-last")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for pair in args.configs.split(","):
        preset, _, device = pair.strip().partition(":")
        device = device or "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            result = {"preset": preset, "device": device, "skipped": "no CUDA GPU on this machine"}
        else:
            result = measure(preset, device, args.image_size, args.batch_size, args.steps, args.warmup,
                             amp=not args.no_amp, channels_last=args.channels_last)
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    main()
