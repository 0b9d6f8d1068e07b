"""The model tab's actions: describe the served model, load another checkpoint (by path or upload)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional, Sequence

from app.actions.reply import Reply, refusals_as_replies, refused
from app.model_host import ModelHost
from qmn.io_utils import atomic_path


def banner(host: ModelHost) -> str:
    info = host.info()
    warn = "⚠️ " if host.untrained else ""
    return f"{warn}Model: {info['status']} · {info['device']} · {info['parameters']:,} parameters"


@refusals_as_replies
def load_checkpoint(host: ModelHost, root: Path, path: str, files: Optional[Sequence[str]], device: str) -> Reply:
    """Load a .safetensors checkpoint given by path, or uploaded together with its .json."""
    if files:
        target = root / ".qmn" / "checkpoints"
        target.mkdir(parents=True, exist_ok=True)
        for src in map(Path, files):
            with atomic_path(target / src.name) as tmp:  # a half-copied checkpoint never sits under its name
                shutil.copyfile(src, tmp)
        weights = [target / Path(f).name for f in files if Path(f).suffix == ".safetensors"]
        if not weights:
            return refused("upload a .safetensors file (and its .json config)")
        path = str(weights[0])
    if not path:
        return refused("give a checkpoint path or upload one")
    if device:
        host.device = device
    host.load(path)
    return Reply(f"Loaded {path}.")
