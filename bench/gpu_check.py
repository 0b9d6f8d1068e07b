"""One short check of every CUDA path, for the few minutes a GPU machine is lent; prints one JSON object.

    python -m bench.gpu_check                 # from the repo root; exits 0 with {"cuda": false} on a CPU machine

Checks (each recorded with its result or its error, so one failure does not hide the others):
  train_tiny / train_base   bf16 autocast training steps (loss finite, img/s, peak memory); base at its preset size,
                            and at 384 px if that fails (swin_base_patch4_window12_384 is built for 384 px input)
  train_tiny_channels_last  the same with the backbone and images in channels-last
  predict_tiny / _base      `Predictor.predict` latency on a 512 px image (median over repeats, after warm-up)
  ddp                       >= 2 GPUs: `torchrun --nproc_per_node 2 -m train` (nccl, DataLoader workers) on generated
                            scenes; 1 GPU: a 1-process nccl group, DDP-wrapped training steps and an all_reduce
Exit status 0 when every check passed (or there is no GPU), 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.train_throughput import measure, synthetic_batches

REPO = Path(__file__).resolve().parents[1]
BASE_FALLBACK_SIZE = 384


def run_check(checks: dict, name: str, fn: Callable[[], dict]) -> None:
    """Record fn's result, or its error (type, message, last frame) without stopping the other checks."""
    started = time.perf_counter()
    try:
        result = fn()
        result["ok"] = result.get("ok", True)
    except Exception as e:  # a check's failure is its result
        frame = traceback.extract_tb(e.__traceback__)[-1]
        result = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:400]}", "at": f"{frame.filename}:{frame.lineno}"}
    result["check_s"] = round(time.perf_counter() - started, 1)
    checks[name] = result
    print(f"{name}: {'ok' if result['ok'] else result.get('error')}", file=sys.stderr, flush=True)
    torch.cuda.empty_cache()


def train_check(preset: str, steps: int, batch_size: int, image_size: int | None = None, channels_last: bool = False) -> dict:
    result = measure(preset, "cuda", image_size, batch_size, steps, warmup=2, amp=True, channels_last=channels_last)
    result["ok"] = result["loss_finite"]
    return result


def predict_check(preset: str, image_size: int | None, repeats: int) -> dict:
    from qmn.config import get_preset
    from qmn.model import QueryMeldNet
    from qmn.predictor import Predictor

    cfg = get_preset(preset, **({"image_size": image_size} if image_size else {}))
    predictor = Predictor(QueryMeldNet(cfg).to("cuda").eval())
    image = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    seconds = []
    for i in range(repeats + 2):  # two warm-up calls (cuDNN autotune, allocator)
        started = time.perf_counter()
        pred = predictor.predict(image, "circle, square, sky, grass", "panoptic", threshold=0.0)  # returns numpy: synced
        if i >= 2:
            seconds.append(time.perf_counter() - started)
    return {"preset": preset, "image_size": cfg.image_size, "input": "512x512", "segments": len(pred.segments),
            "median_ms": round(1000 * float(np.median(seconds)), 2), "p90_ms": round(1000 * float(np.percentile(seconds, 90)), 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_one_process_check() -> dict:
    """A world of one on nccl: the process group, DDP's gradient hooks, and the criterion's all_reduce all run."""
    import torch.distributed as dist

    from qmn.config import get_preset
    from qmn.model import QueryMeldNet
    from train.trainer import LossModule

    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        cfg = get_preset("tiny", image_size=128)
        model = QueryMeldNet(cfg).to("cuda").train()
        module = torch.nn.parallel.DistributedDataParallel(LossModule(model), device_ids=[0], find_unused_parameters=True)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        losses = []
        for batch in synthetic_batches(cfg, 2, seed=0)[:3]:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = module(batch.to("cuda"))["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        total = torch.ones(1, device="cuda")
        dist.all_reduce(total)
        return {"mode": "1-process nccl group", "losses": [round(v, 4) for v in losses],
                "ok": bool(np.isfinite(losses).all()) and float(total) == 1.0}
    finally:
        dist.destroy_process_group()


def ddp_torchrun_check(nproc: int) -> dict:
    """The real trainer under torchrun on nccl, with DataLoader worker processes."""
    from qmn.data.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        data = generate(Path(tmp) / "scenes", 8, seed=0, size=128, variant="panoptic")
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "train",
               "--data", str(data), "--out", str(out), "--preset", "tiny", "--image-size", "128", "--steps", "4",
               "--batch-size", "2", "--log-every", "1", "--workers", "2", "--device", "cuda"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()] if (out / "log.jsonl").exists() else []
        steps = [r["step"] for r in records if "loss" in r]
        result = {"mode": f"torchrun {nproc} processes", "returncode": done.returncode, "logged_steps": steps,
                  "last_checkpoint": (out / "last.safetensors").exists(),
                  "ok": done.returncode == 0 and steps == [1, 2, 3, 4] and (out / "last.safetensors").exists()}
        if not result["ok"]:
            result["stderr_tail"] = done.stderr[-1500:]
        return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5, help="timed training steps per configuration (default 5)")
    p.add_argument("--batch-size", type=int, default=2, help="images per training step (default 2)")
    p.add_argument("--repeats", type=int, default=10, help="timed predict calls (default 10)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(json.dumps({"cuda": False, "torch": torch.__version__}))
        return 0
    count = torch.cuda.device_count()
    report = {"cuda": True, "torch": torch.__version__, "cuda_version": torch.version.cuda, "gpus": count,
              "gpu": torch.cuda.get_device_name(0), "bf16_supported": torch.cuda.is_bf16_supported(), "checks": {}}
    checks = report["checks"]
    torch.backends.cudnn.benchmark = True
    run_check(checks, "train_tiny", lambda: train_check("tiny", args.steps, args.batch_size))
    run_check(checks, "train_tiny_channels_last", lambda: train_check("tiny", args.steps, args.batch_size, channels_last=True))
    run_check(checks, "train_base", lambda: train_check("base", args.steps, args.batch_size))
    base_size = None
    if not checks["train_base"]["ok"]:
        base_size = BASE_FALLBACK_SIZE
        run_check(checks, f"train_base_{base_size}px", lambda: train_check("base", args.steps, args.batch_size, base_size))
    run_check(checks, "predict_tiny", lambda: predict_check("tiny", None, args.repeats))
    run_check(checks, "predict_base", lambda: predict_check("base", base_size, args.repeats))
    run_check(checks, "ddp", lambda: ddp_torchrun_check(2) if count >= 2 else ddp_one_process_check())
    report["ok"] = all(c["ok"] for c in checks.values())
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
