"""Shared fixtures: tiny model configs and the real-data folder (absent in a user's clone: tests skip)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (it lives beside the repo, not in it)")
    return path


@pytest.fixture(scope="session")
def micro_cfg():
    """The smallest honest QueryMeldNet: every part present, 1 encoder / 2 decoder layers, 128 px."""
    from qmn import get_preset

    return get_preset("tiny", image_size=128, enc_layers=1, dec_layers=2, num_learnable=8, num_conditional=16,
                      hidden_dim=64, ffn_dim=256, mask_dim=64, num_mask_points=1024, num_prompted_train=0)


@pytest.fixture(scope="session")
def micro_model(micro_cfg):
    import torch

    from qmn import QueryMeldNet

    torch.manual_seed(0)
    return QueryMeldNet(micro_cfg).eval()
