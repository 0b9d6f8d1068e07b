"""AdamW with per-part learning rates and the Mask DINO schedule (linear warm-up, x0.1 at 90% and 95% of steps)."""
from __future__ import annotations

import torch
from torch import nn

NO_DECAY = ("norm", "bias", "level_embed", "logit_scale", "content.weight", "anchor.weight", "type_embed")


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_multiplier: float = 0.1) -> list[dict]:
    """Backbone and text encoder at lr x `backbone_multiplier`; no weight decay on norms, biases and embeddings."""
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        slow = name.startswith(("backbone.", "text_encoder."))
        decay = 0.0 if p.ndim <= 1 or any(k in name for k in NO_DECAY) else weight_decay
        groups.setdefault((lr * (backbone_multiplier if slow else 1.0), decay), []).append(p)
    return [{"params": ps, "lr": g_lr, "initial_lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, backbone_multiplier: float = 0.1) -> torch.optim.AdamW:
    """AdamW over `param_groups`. foreach=True also on CPU, where torch's default is a Python loop over the ~330
    tensors of the tiny model: the multi-tensor kernels cut the optimizer step's time by about half there."""
    return torch.optim.AdamW(param_groups(model, lr, weight_decay, backbone_multiplier), lr=lr, foreach=True)


FIRST_DROP, SECOND_DROP = 0.9, 0.95  # fractions of the run (steps or time budget) where the lr drops x0.1


def lr_factor(step: int, total_steps: int, warmup_steps: int, drops: tuple[float, ...] = (FIRST_DROP, SECOND_DROP),
              time_fraction: float = 0.0) -> float:
    """Multiplier of the base lr at `step` (0-based). With a wall-clock budget, `time_fraction` (elapsed / budget)
    also counts as progress, so the x0.1 drops happen before the budget ends, not after."""
    factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    progress = max(step / max(total_steps, 1), time_fraction)
    for d in drops:
        if progress >= d:
            factor *= 0.1
    return factor


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor
