"""Device names as users type them ("auto", "cpu", "cuda", "cuda:1") -> a torch.device, with a clear error."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> cuda when available, else cpu; a clear error for an unavailable device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
    return dev
