"""Checkpoints: weights in `.safetensors`, config + training record in a JSON beside it. Nothing is ever unpickled."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from qmn.io_utils import atomic_path, atomic_write_json


class CheckpointError(ValueError):
    """A file that is not a QueryMeldNet safetensors checkpoint (or is unreadable)."""


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def check_safetensors(path: str | Path) -> None:
    """Refuse anything that is not a safetensors file (pickles, zip-based torch.save files) by reading its header."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: file too short to be a safetensors checkpoint")
        (n,) = struct.unpack("<Q", head)
        if n <= 1 or n > 100_000_000 or n + 8 > path.stat().st_size:
            kind = "a pickle" if head[:1] == b"\x80" else "a zip/torch.save archive" if head[:2] == b"PK" else "not safetensors"
            raise CheckpointError(f"{path}: {kind} file; only .safetensors checkpoints are loaded (pickles are never "
                                  f"unpickled, for safety)")
        header = f.read(min(n, 64))
    if not header.lstrip().startswith(b"{"):
        raise CheckpointError(f"{path}: not a safetensors file (bad header); only .safetensors checkpoints are loaded")


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    check_safetensors(path)
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None


def write_checkpoint(path: str | Path, state: dict[str, torch.Tensor], meta: dict, half: bool = False) -> None:
    """Atomically write weights (optionally fp16) and the JSON sidecar (weights first: a reader never sees a JSON whose
    weights are missing)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: checkpoint path must end in .safetensors")
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "qmn"})
    atomic_write_json(sidecar_path(path), meta, indent=2)


def read_meta(path: str | Path) -> dict:
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(f"{path}: missing its JSON config {side.name} (a QueryMeldNet checkpoint is a .safetensors + .json pair)")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{side}: malformed JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(f"{side}: no 'config' field")
    return meta
