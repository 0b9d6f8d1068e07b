"""MattingNet checkpoints: safetensors weights (fp16) + a JSON sidecar {"config", "record"}; never unpickles."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from qmn.io_utils import atomic_path, atomic_write_json
from qmn.matting.network import MattingConfig, MattingNet

BUNDLED_CHECKPOINT = Path(__file__).resolve().parents[2] / "assets" / "matting" / "matting.safetensors"


def save_matting_model(model: MattingNet, path: str | Path, record: dict | None = None) -> None:
    """Write `path` (.safetensors, fp16 floats) and `path.with_suffix('.json')` atomically."""
    path = Path(path)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    atomic_write_json(path.with_suffix(".json"), {"config": model.cfg.to_dict(), "record": record or {}}, indent=2)


def load_matting_model(path: str | Path | None = None, device: str = "cpu") -> MattingNet:
    """Load a MattingNet in eval mode from `path` (default: the bundled assets/matting checkpoint).

    Raises ValueError (one line, naming the file) when the file is missing, not safetensors, or does not
    match its JSON config.
    """
    path = Path(path) if path is not None else BUNDLED_CHECKPOINT
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: matting checkpoints must be .safetensors files")
    sidecar = path.with_suffix(".json")
    if not path.is_file() or not sidecar.is_file():
        raise ValueError(f"{path}: matting checkpoint or its JSON config {sidecar.name} not found")
    try:
        cfg = MattingConfig.from_dict(json.loads(sidecar.read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{sidecar}: bad field 'config' in matting checkpoint JSON ({exc})") from None
    try:
        state = load_file(str(path), device=device)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    model = MattingNet(cfg)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise ValueError(f"{path}: weights do not match the config in {sidecar.name} ({first_line})") from None
    return model.to(device).eval()


def beats_hard_mask(path: str | Path | None = None) -> bool:
    """True when the checkpoint's training record shows it beat the hard mask's SAD on the held-out scenes.

    Why: `refine(method="auto")` should never make a mask worse, so an under-trained network is used only
    when asked for by name.
    """
    sidecar = (Path(path) if path is not None else BUNDLED_CHECKPOINT).with_suffix(".json")
    try:
        record = json.loads(sidecar.read_text()).get("record", {})
        return float(record["val_sad_network"]) < float(record["val_sad_hard_mask"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return False
