"""The fixed text projection (`QMNConfig.train_text_proj=False`, the presets): trained, `text_proj` folded the nine
shape names into one vector (cosine 0.96 vs 0.35 in MiniLM, docs/why_things.md), so no name could be told from
another. Fixed and orthonormal, it keeps the names as far apart as the text encoder has them, and training moves
the image side only."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from qmn import QMNConfig, QueryMeldNet, get_preset
from qmn.batching import collate
from qmn.data.synth import SyntheticScenes
from train.optim import build_optimizer

SHAPES = ["circle", "square", "triangle", "star", "ring", "ellipse", "cross", "heart", "diamond"]


def _mean_offdiagonal_cosine(x: torch.Tensor) -> float:
    c = x @ x.T
    n = len(x)
    return float((c.sum() - c.diag().sum()) / (n * n - n))


def _train_steps(cfg, steps: int = 2) -> tuple[QueryMeldNet, torch.Tensor]:
    """(model after `steps` AdamW steps on synthetic panoptic scenes, its text_proj weight before)."""
    torch.manual_seed(0)
    model = QueryMeldNet(cfg).train()
    before = model.text_proj.weight.detach().clone()
    optimizer = build_optimizer(model, 1e-2, 0.05, 1.0)
    scenes = SyntheticScenes(2, 0, cfg.image_size, "panoptic")
    batch = collate([scenes[0], scenes[1]], cfg, np.random.default_rng(0))
    for _ in range(steps):
        optimizer.zero_grad()
        model.compute_loss(batch)["loss"].backward()
        optimizer.step()
    return model, before


def test_the_fixed_projection_keeps_the_names_apart_and_never_trains(micro_cfg):
    assert not micro_cfg.train_text_proj and not get_preset("base").train_text_proj
    model, before = _train_steps(micro_cfg)
    weight = model.text_proj.weight.detach()
    assert torch.equal(weight, before) and not model.text_proj.weight.requires_grad
    torch.testing.assert_close(weight @ weight.T, torch.eye(weight.shape[0]), atol=1e-5, rtol=0)  # orthonormal rows
    assert float(model.text_proj.bias.abs().max()) == 0.0
    raw = F.normalize(model.text_encoder.encode(SHAPES).float(), dim=-1)
    projected = model.encode_text(SHAPES).detach()
    assert abs(_mean_offdiagonal_cosine(projected) - _mean_offdiagonal_cosine(raw)) < 0.1
    assert _mean_offdiagonal_cosine(projected) < 0.6


def test_a_trained_projection_moves_and_older_configs_keep_training_it(micro_cfg):
    model, before = _train_steps(dataclasses.replace(micro_cfg, train_text_proj=True))
    assert not torch.equal(model.text_proj.weight.detach(), before)
    old = {k: v for k, v in get_preset("tiny").to_dict().items() if k != "train_text_proj"}
    assert QMNConfig.from_dict(old).train_text_proj
