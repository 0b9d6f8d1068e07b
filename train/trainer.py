"""The training loop: AdamW + schedule, bf16 autocast on CUDA, DDP, resumable atomic checkpoints, JSONL log + plot,
periodic held-out evaluation keeping the best checkpoint, and a wall-clock budget."""
from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from qmn.config import QMNConfig
from qmn.model import QueryMeldNet
from train.data import TrainingData, make_loader
from train.distributed import DistInfo, barrier, broadcast_flag, broadcast_value
from train.log import append_jsonl, plot_run, truncate_after
from train.optim import FIRST_DROP, build_optimizer, lr_factor, set_lr
from train.state import load_train_state, save_train_state


def portable_path(path: str | Path) -> str:
    """A data path for the checkpoint's record: relative to the working directory, never this machine's absolute path."""
    return Path(os.path.relpath(Path(path).resolve(), Path.cwd())).as_posix()


@dataclass
class TrainOptions:
    out: Path
    steps: int
    batch_size: int = 4
    lr: float = 2e-4
    weight_decay: float = 0.05
    backbone_lr_mult: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 0.1
    seed: int = 0
    log_every: int = 10
    save_every: int = 200
    eval_every: int = 0
    eval_minutes: float = 0.0  # also evaluate every this many minutes of training (0 = only by steps)
    # after this many evaluations without a new best the lr drops x10 (the annealing the schedule would start at 90%);
    # after as many more, training stops (0 = never)
    patience: int = 0
    eval_images: int = 50
    max_minutes: float = 0.0
    workers: int = 0
    amp: bool = True
    freeze_backbone: bool = False
    command: str = ""
    extra_record: dict = field(default_factory=dict)


class LossModule(nn.Module):
    """What DDP wraps: forward(batch) -> loss dict (DDP only hooks `forward`)."""

    def __init__(self, model: QueryMeldNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.compute_loss(batch)


def evaluate_heldout(model: QueryMeldNet, data: TrainingData, max_images: int) -> dict:
    """Metrics of each non-empty held-out part, flattened to "<dataset>/<metric>" plus "score" (mean primary metric)."""
    from qmn.evaluate import evaluate_model
    from qmn.predictor import Predictor

    flat, primaries = {}, []
    for entry, part in zip(data.spec.datasets, data.heldout):
        if len(part) == 0:
            continue
        result = evaluate_model(Predictor(model), part, part.task, max_images=max_images, progress=False)
        metrics = result["metrics"]
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                flat[f"{entry.name}/{k}"] = float(v)
        primary = metrics.get(result["primary"])
        if isinstance(primary, (int, float)):
            primaries.append(float(primary))
    if primaries:
        flat["score"] = sum(primaries) / len(primaries)
    return flat


class Trainer:
    def __init__(self, model: QueryMeldNet, data: TrainingData, opts: TrainOptions, device: torch.device, dist: DistInfo) -> None:
        self.model, self.data, self.opts, self.device, self.dist = model, data, opts, device, dist
        self.out = opts.out
        if opts.freeze_backbone:
            model.backbone.requires_grad_(False)
        model.to(device)
        self.optimizer = build_optimizer(model, opts.lr, opts.weight_decay, opts.backbone_lr_mult)
        module = LossModule(model)
        if dist.enabled:
            module = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                                         find_unused_parameters=True)
        self.module = module
        self.step = 0
        self.best = -math.inf
        self.evals_since_best = 0
        self.annealing = False  # the held-out score plateaued once: the lr is past its first x0.1 drop
        self.eval_seconds = 0.0  # wall time spent evaluating: not part of the training budget
        self.last_eval_step = -1
        self.elapsed_before = 0.0  # wall seconds of earlier (interrupted) runs, for the record

    # ---------------------------------------------------------------- checkpoints
    def _meta(self) -> dict:
        return {"step": self.step, "best": self.best if math.isfinite(self.best) else None,
                "elapsed_s": self.elapsed_before + (time.time() - self.started), "total_steps": self.opts.steps,
                "seed": self.opts.seed, "annealing": self.annealing}

    def save(self, eval_metrics: dict | None = None) -> None:
        if not self.dist.is_main:
            return
        meta = self._meta()
        save_train_state(self.out / "train_state.safetensors", self.model.state_dict(), self.optimizer, meta)
        self.model.save(self.out / "last.safetensors", record=self.record(eval_metrics))

    def record(self, eval_metrics: dict | None = None) -> dict:
        rec = dict(self.model.record or {})
        rec.update({
            "command": self.opts.command, "steps": self.step, "total_steps": self.opts.steps,
            "batch_size": self.opts.batch_size, "world_size": self.dist.world_size, "seed": self.opts.seed,
            "wall_time_s": round(self.elapsed_before + time.time() - self.started, 1),
            "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads, "
                       f"{'cuda ' + torch.cuda.get_device_name(self.device) if self.device.type == 'cuda' else 'cpu'}".strip(),
            "data": [{"name": d.name, "path": portable_path(d.path), "task": t.task, "ratio": d.ratio, "train_images": len(t),
                      "heldout_images": len(h)} for d, t, h in zip(self.data.spec.datasets, self.data.train, self.data.heldout)],
            "vocabulary": sorted({w for t in self.data.train for w in t.vocabulary}),
        })
        rec.update(self.opts.extra_record)
        if eval_metrics:
            rec["heldout_metrics"] = eval_metrics
        return rec

    def resume(self) -> bool:
        path = self.out / "train_state.safetensors"
        if not path.exists():
            return False
        model_state, optim_state, meta = load_train_state(path)
        self.model.load_state_dict(model_state, strict=False)
        self.optimizer.load_state_dict(optim_state)
        self.step = int(meta["step"])
        self.best = meta["best"] if meta.get("best") is not None else -math.inf
        self.annealing = bool(meta.get("annealing", False))
        self.elapsed_before = float(meta.get("elapsed_s", 0.0))
        if self.dist.is_main:
            truncate_after(self.out / "log.jsonl", self.step)
        return True

    # ---------------------------------------------------------------- loop
    def evaluate(self) -> dict:
        if not self.dist.is_main or not any(len(h) for h in self.data.heldout):
            return {}
        started, self.last_eval_step = time.time(), self.step
        self.model.eval()
        metrics = evaluate_heldout(self.model, self.data, self.opts.eval_images)
        self.model.train()
        append_jsonl(self.out / "log.jsonl", {"step": self.step, "eval": metrics})
        score = metrics.get("score")
        if score is not None and score > self.best:
            self.best, self.evals_since_best = score, 0
            self.model.save(self.out / "best.safetensors", record=self.record(metrics))
        else:
            self.evals_since_best += 1
        self.eval_seconds += time.time() - started
        return metrics

    def eval_due(self, next_eval_s: float) -> bool:
        """By steps (--eval-every) or by training minutes (--eval-minutes, rank 0's clock)."""
        if not any(len(h) for h in self.data.heldout):
            return False
        if self.opts.eval_every and self.step % self.opts.eval_every == 0:
            return True
        return self.opts.eval_minutes > 0 and broadcast_flag(self.training_seconds() >= next_eval_s, self.dist, self.device)

    def training_seconds(self) -> float:
        """Wall seconds of this run spent training (evaluations excluded): what --max-minutes budgets."""
        return time.time() - self.started - self.eval_seconds

    def restore_best(self, last_eval: dict) -> dict:
        """Load best.safetensors when it scored above the final weights; returns the kept weights' metrics."""
        path = self.out / "best.safetensors"
        if not (path.exists() and last_eval.get("score", -math.inf) < self.best):
            return last_eval
        from qmn.checkpoint import read_meta, read_safetensors

        own = self.model.state_dict()
        self.model.load_state_dict({k: v.to(own[k].dtype) for k, v in read_safetensors(path).items()})
        if self.dist.is_main:
            append_jsonl(self.out / "log.jsonl", {"step": self.step, "event": f"kept best.safetensors (score {self.best:.4f})"})
        return (read_meta(path).get("record") or {}).get("heldout_metrics") or last_eval

    def fit(self) -> dict:
        opts = self.opts
        self.started = time.time()
        self.out.mkdir(parents=True, exist_ok=True)
        loader = make_loader(self.data, self.model.cfg, opts.batch_size, opts.seed, self.dist.rank, self.dist.world_size,
                             self.step, opts.steps, opts.workers)
        self.model.train()
        amp = opts.amp and self.device.type == "cuda"
        bar = tqdm(total=opts.steps, initial=self.step, desc="train", unit="step", disable=not self.dist.is_main,
                   dynamic_ncols=True)
        window_start, window_images, last_eval = time.time(), 0, {}
        end_event = "done"
        next_eval_s = opts.eval_minutes * 60
        for step, batch in loader:
            torch.manual_seed(opts.seed * 1_000_003 + step * 101 + self.dist.rank)  # RNG state = f(seed, step, rank)
            time_fraction = FIRST_DROP if self.annealing else 0.0
            if opts.max_minutes > 0:  # rank 0's clock, so every rank drops its lr at the same step
                time_fraction = max(time_fraction, broadcast_value(self.training_seconds() / (opts.max_minutes * 60),
                                                                   self.dist, self.device))
            set_lr(self.optimizer, lr_factor(step, opts.steps, opts.warmup_steps, time_fraction=time_fraction))
            batch = batch.to(self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=amp):
                losses = self.module(batch)
            self.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if opts.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), opts.grad_clip)
            self.optimizer.step()
            self.step = step + 1
            window_images += opts.batch_size * self.dist.world_size
            bar.update(1)
            if self.dist.is_main and (self.step % opts.log_every == 0 or self.step == opts.steps):
                now = time.time()
                rec = {"step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                       "img_per_s": round(window_images / max(now - window_start, 1e-9), 2),
                       "elapsed_s": round(self.elapsed_before + now - self.started, 1)}
                rec.update({k: round(v.item(), 5) for k, v in losses.items() if not k[-1].isdigit()})  # no per-layer aux terms
                append_jsonl(self.out / "log.jsonl", rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", img_s=rec["img_per_s"])
                window_start, window_images = now, 0
            if self.eval_due(next_eval_s):
                last_eval = self.evaluate() or last_eval
                next_eval_s = self.training_seconds() + opts.eval_minutes * 60
                barrier(self.dist)
                if broadcast_flag(opts.patience > 0 and self.evals_since_best >= opts.patience, self.dist, self.device):
                    if self.annealing:
                        end_event = f"stopped early: no better held-out score in {opts.patience} evaluations at the lower lr"
                        break
                    # a plateau at the full lr: anneal now instead of stopping (the drop is where fine-tuning gains most)
                    self.annealing, self.evals_since_best = True, 0
                    if self.dist.is_main:
                        append_jsonl(self.out / "log.jsonl", {"step": self.step, "event": (
                            f"held-out score flat for {opts.patience} evaluations: lr x0.1 from here")})
            if self.step % opts.save_every == 0:
                self.save(last_eval)
                if self.dist.is_main:
                    plot_run(self.out / "log.jsonl", self.out / "plot.png")
            over_budget = opts.max_minutes > 0 and self.training_seconds() > opts.max_minutes * 60
            if broadcast_flag(over_budget, self.dist, self.device) and self.step < opts.steps:
                end_event = "stopped at time budget"
                break
        bar.close()
        if (opts.eval_every or opts.eval_minutes) and self.last_eval_step != self.step:
            last_eval = self.evaluate() or last_eval
        last_eval = self.restore_best(last_eval)
        self.save(last_eval)
        if self.dist.is_main:
            plot_run(self.out / "log.jsonl", self.out / "plot.png")
            append_jsonl(self.out / "log.jsonl", {"step": self.step, "event": end_event})
        return {"step": self.step, "stopped_early": end_event != "done", "eval": last_eval}


def config_with(cfg: QMNConfig, **overrides) -> QMNConfig:
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


