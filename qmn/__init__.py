"""QueryMeldNet: text-prompted universal segmentation with query meld (learnable + conditional queries)."""
from qmn.config import PRESETS, QMNConfig, get_preset
from qmn.model import QueryMeldNet, load_model
from qmn.structures import Prediction, Segment

__all__ = ["QMNConfig", "QueryMeldNet", "load_model", "get_preset", "PRESETS", "Prediction", "Segment"]
