"""QueryMeldNet: text-prompted universal segmentation with query meld (learnable + conditional queries).

The public names load lazily, so `import qmn.io_utils` or `qmn.data` does not pay for torch and timm.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "QMNConfig": "qmn.config", "get_preset": "qmn.config", "PRESETS": "qmn.config",
    "QueryMeldNet": "qmn.model", "load_model": "qmn.model", "Predictor": "qmn.predictor",
    "Prediction": "qmn.structures", "Segment": "qmn.structures",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'qmn' has no attribute {name!r}")
