"""Resumable training state in ONE safetensors file (model + AdamW tensors, JSON metadata inside the header), so a
single atomic rename makes it current: a kill -9 at any moment leaves the previous state loadable. Never unpickled."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from qmn.checkpoint import read_safetensors
from qmn.io_utils import atomic_path


def save_train_state(path: str | Path, model_state: dict, optimizer: torch.optim.Optimizer, meta: dict) -> None:
    opt = optimizer.state_dict()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    scalars: dict[str, dict] = {}
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = [{k: v for k, v in g.items()} for g in opt["param_groups"]]
    header = {"meta": json.dumps(meta), "param_groups": json.dumps(groups), "scalars": json.dumps(scalars)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_train_state(path: str | Path) -> tuple[dict, dict, dict]:
    """-> (model state dict, optimizer state dict, meta)."""
    from safetensors import safe_open

    tensors = read_safetensors(path)
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if "meta" not in header:
        raise ValueError(f"{path}: not a QueryMeld training state (no 'meta' in its header)")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, values in json.loads(header["scalars"]).items():
        state.setdefault(int(idx), {}).update(values)
    optim = {"state": state, "param_groups": json.loads(header["param_groups"])}
    return model_state, optim, json.loads(header["meta"])
