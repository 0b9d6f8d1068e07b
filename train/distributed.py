"""torchrun integration: process group from the environment (gloo on CPU, nccl on CUDA), rank helpers."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (RANK / WORLD_SIZE / LOCAL_RANK); a no-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info


def training_device(requested: str, info_local_rank: int) -> torch.device:
    """"auto" -> this process's GPU when there is one (cuda:LOCAL_RANK), else cpu."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested but no CUDA GPU is available")
        torch.cuda.set_device(info_local_rank)
        return torch.device("cuda", info_local_rank)
    return torch.device(requested)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_value(value: float, info: DistInfo, device: torch.device) -> float:
    """Rank 0's number (e.g. the elapsed fraction of the time budget) for every rank, so all act on the same one."""
    if not info.enabled:
        return value
    t = torch.tensor([float(value)], device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's decision (e.g. "time budget reached") for every rank, so all stop at the same step."""
    return broadcast_value(1.0 if flag else 0.0, info, device) > 0.5


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
