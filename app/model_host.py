"""The one model the app serves: load / swap / roll back a checkpoint, describe it for the model tab.

Shared by all sessions (one model in memory); swaps are guarded by a lock so a predict never sees a
half-loaded model. When no checkpoint exists yet, a clearly-labelled untrained `tiny` model is used.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Optional

from qmn.device import resolve_device

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "qmn_tiny.safetensors"


class ModelHost:
    """Holds the current model plus the previous checkpoints for roll-back."""

    def __init__(self, checkpoint: Optional[str | Path] = None, device: str = "auto", model: Any = None):
        self.device = str(resolve_device(device))
        self._lock = threading.Lock()
        self.history: list[Optional[Path]] = []  # earlier checkpoints, newest last; None = untrained
        self.checkpoint: Optional[Path] = None
        self.note = ""
        if model is not None:  # injected (tests)
            self.model, self.note = model, "model given in code"
            return
        path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
        if path.is_file():
            self.model, self.checkpoint = self._load(path), path
        else:
            self.model = self._untrained()
            self.note = f"UNTRAINED tiny model: no checkpoint at {path} (train one with `python -m train`)"

    @property
    def untrained(self) -> bool:
        return self.checkpoint is None

    def _load(self, path: Path) -> Any:
        from qmn import load_model

        if path.suffix != ".safetensors":
            raise ValueError(f"{path.name}: a checkpoint must be a .safetensors file (with its .json beside it)")
        return load_model(str(path), device=self.device)

    def _untrained(self) -> Any:
        from qmn import QueryMeldNet, get_preset

        model = QueryMeldNet(get_preset("tiny"))
        return model.to(self.device).eval()

    def predict(self, image, prompts, task, threshold, boxes=None, points=None):
        with self._lock:
            model = self.model
        from qmn.predictor import Predictor

        return Predictor(model).predict(image, prompts, task, threshold=threshold, boxes=boxes or None,
                                        points=points or None)

    def load(self, path: str | Path) -> None:
        """Swap in `path`; the current checkpoint goes on the roll-back stack. ValueError if unloadable."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: checkpoint file not found")
        model = self._load(path)
        with self._lock:
            self.history.append(self.checkpoint)
            self.model, self.checkpoint, self.note = model, path, ""

    def rollback(self) -> None:
        """Go back to the checkpoint used before the last `load`."""
        if not self.history:
            raise ValueError("nothing to roll back to: no model was switched in this run")
        previous = self.history.pop()
        model = self._untrained() if previous is None else self._load(previous)
        with self._lock:
            self.model, self.checkpoint = model, previous
            self.note = "" if previous else "UNTRAINED tiny model (rolled back)"

    @property
    def threshold(self) -> float:
        """The current model's calibrated score threshold: what the slider shows after a load, swap or roll back."""
        return float(getattr(getattr(self.model, "cfg", None), "score_threshold", 0.3))

    def info(self) -> dict:
        """Facts for the model tab: checkpoint, device, preset fields, parameter and query counts, record."""
        cfg = getattr(self.model, "cfg", None) or getattr(self.model, "config", None)
        params = sum(p.numel() for p in self.model.parameters()) if hasattr(self.model, "parameters") else 0
        record: Any = None
        if self.checkpoint is not None:
            meta = self.checkpoint.with_suffix(".json")
            if meta.is_file():
                try:
                    record = json.loads(meta.read_text()).get("record")
                except (OSError, ValueError) as e:
                    record = f"unreadable {meta.name}: {e}"
        return {
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "status": self.note or "trained checkpoint",
            "device": self.device,
            "parameters": int(params),
            "backbone": getattr(cfg, "backbone", None),
            "image_size": getattr(cfg, "image_size", None),
            "hidden_dim": getattr(cfg, "hidden_dim", None),
            "query_mode": getattr(cfg, "query_mode", None),
            "learnable_queries": getattr(cfg, "num_learnable", None),
            "conditional_queries": getattr(cfg, "num_conditional", None),
            "record": record,
        }
